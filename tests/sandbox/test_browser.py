"""The browser backend on Debian's Chromium: snapshots with refs, actions, screenshots, network limits (the
loopback included: only the allowed origins, per port), isolated contexts of one shared process, and BrowserAgent
driving a page. Only 127.0.0.1 is ever contacted."""

from __future__ import annotations

import base64
import http.server
import re
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from typing import ClassVar

import anyio
import pytest
import pytest_asyncio
from playwright.async_api import Error as PlaywrightError

from agentscope.agents import BrowserAgent
from agentscope.exceptions import SandboxError
from agentscope.message import ImageBlock, Msg, ToolResultBlock
from agentscope.sandbox import Browser, open_browser
from agentscope.testing import ModelRequest, ScriptedModel, tool_call
from agentscope.tools.builtin import make_browser_tools

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed"),
]

PAGE = b"""<!doctype html><html><head><title>Test page</title></head><body>
<h1>Hello</h1>
<button onclick="document.getElementById('out').textContent='clicked ' + document.getElementById('name').value">
Press me</button>
<p id="out">not yet</p>
<label>Name <input id="name"></label>
<label>Color <select id="color"><option>red</option><option value="g">green</option></select></label>
<div style="height: 3000px">tall</div>
<img src="http://10.255.255.1/tracker.png">
<script>
  fetch("http://other.test:%(port)d/data").catch(() => {});
  fetch("http://allowed.test:%(port)d/data").then(r => r.text()).then(t => document.title += " " + t);
  localStorage.setItem("seen", localStorage.getItem("seen") ? "again" : "first");
</script>
</body></html>"""


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(f"{self.headers.get('Host')}{self.path}")
        body = b"fetched" if self.path == "/data" else PAGE % {b"port": self.server.server_address[1]}
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if self.path == "/data" else "text/html")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[int, list[str]]]:
    """A page server on 127.0.0.1; yields its port and the hosts/paths it served."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], _Handler.hits
    server.shutdown()
    server.server_close()
    thread.join()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the module; ``*.test`` names resolve to 127.0.0.1 (nothing else resolves)."""
    hosts = {"allowed.test": "127.0.0.1", "other.test": "127.0.0.1"}
    async with Browser(host_map=hosts, warm_sessions=2) as b:
        yield b


def _local(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}"]


async def test_snapshot_refs_actions_and_screenshot(browser: Browser, site: tuple[int, list[str]]) -> None:
    port, _hits = site
    async with browser.session(allowed_origins=_local(port)) as page:
        note = await page.navigate(f"http://127.0.0.1:{port}/")
        assert "status 200" in note
        snapshot = await page.snapshot()
        assert 'heading "Hello"' in snapshot
        button = re.search(r'button "Press me" \[ref=(e\d+)\]', snapshot)
        field = re.search(r'textbox "Name" \[ref=(e\d+)\]', snapshot)
        assert button is not None
        assert field is not None
        await page.type(field.group(1), "Ada")
        await page.click(button.group(1))
        assert "clicked Ada" in await page.snapshot()
        color = re.search(r'combobox "Color" \[ref=(e\d+)\]', snapshot)
        assert color is not None
        assert await page.select(color.group(1), "green") == "Selected 'green' in " + color.group(1) + "."
        assert await page.page.evaluate("document.getElementById('color').value") == "g"
        await page.select(color.group(1), "g")  # by value too
        with pytest.raises(SandboxError, match="has no option 'blue'; its options: 'red', 'green'"):
            await page.select(color.group(1), "blue")
        with pytest.raises(SandboxError, match="not a drop-down"):
            await page.select(button.group(1), "red")
        await page.scroll(dy=800)
        assert await page.page.evaluate("window.scrollY") > 0
        shot = await page.screenshot()
        assert isinstance(shot, ImageBlock)
        assert base64.b64decode(shot.source.data)[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[union-attr]
        with pytest.raises(SandboxError, match="ref"):
            await page.click("not-a-ref")


async def test_only_allowed_origins(browser: Browser, site: tuple[int, list[str]]) -> None:
    port, hits = site
    async with browser.session(allowed_origins=[*_local(port), f"http://allowed.test:{port}"]) as page:
        await page.navigate(f"http://127.0.0.1:{port}/")
        await page.page.wait_for_function("document.title.includes('fetched')")
        assert any("tracker.png" in url for url in page.blocked)
        assert any(url.startswith(f"http://other.test:{port}/") for url in page.blocked)
        assert f"allowed.test:{port}/data" in hits
        assert f"other.test:{port}/data" not in hits
        with pytest.raises(SandboxError, match="not reachable"):
            await page.navigate("http://example.com/")
    with pytest.raises(SandboxError, match="external_hosts"):
        await browser.new_session(allowed_origins=["https://example.org"])
    with pytest.raises(SandboxError, match="external_hosts"):  # a name that starts with 127. is still a name
        await browser.new_session(allowed_origins=["http://127.example.com"])


async def test_a_partly_covered_element_is_clicked_where_it_shows(browser: Browser) -> None:
    async with browser.session() as page:
        await page.page.set_content(
            '<button id="under" style="position:absolute;left:10px;top:10px;width:40px;height:40px" '
            "onclick=\"document.title='under'\">ONE</button>"
            '<button style="position:absolute;left:25px;top:25px;width:40px;height:40px" '
            "onclick=\"document.title='over'\">TWO</button>"
        )
        ref = re.search(r'button "ONE" \[ref=(e\d+)\]', await page.snapshot())
        assert ref is not None
        page.page.set_default_timeout(2000)
        await page.click(ref.group(1))  # its centre is under TWO: a click there would reach TWO
        assert await page.page.title() == "under"


class _Api(http.server.BaseHTTPRequestHandler):
    """Stands in for a local service a page must not reach (the studio's API on another loopback port)."""

    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(b'{"runs": ["secret"]}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[int, list[str]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], _Api.hits
    server.shutdown()
    server.server_close()
    thread.join()


async def test_loopback_only_when_allowed_per_port(
    browser: Browser, site: tuple[int, list[str]], api: tuple[int, list[str]]
) -> None:
    """Regression (issue 11): with allowed_origins=[] a session opened the studio's API on 127.0.0.1."""
    port, _hits = site
    api_port, api_hits = api
    async with browser.session(allowed_origins=[]) as page:
        for url in (f"http://127.0.0.1:{api_port}/api/runs", f"http://localhost:{api_port}/api/runs"):
            with pytest.raises(SandboxError, match="not reachable"):
                await page.navigate(url)
        with pytest.raises(PlaywrightError):  # a page going there on its own is blocked too
            await page.page.goto(f"http://127.0.0.1:{api_port}/api/runs")
        assert any(url.startswith(f"http://127.0.0.1:{api_port}/") for url in page.blocked)
    async with browser.session(allowed_origins=_local(port)) as page:
        await page.navigate(f"http://127.0.0.1:{port}/")
        for target in (f"http://127.0.0.1:{api_port}/api/runs", f"http://localhost:{port}/data"):
            outcome = await page.page.evaluate(
                "url => fetch(url).then(r => r.text(), e => 'failed: ' + e)", target
            )
            assert outcome.startswith("failed"), (target, outcome)
        socket_outcome = await page.page.evaluate(
            """port => new Promise(done => {
                const ws = new WebSocket(`ws://127.0.0.1:${port}/socket`);
                ws.onopen = () => done('open');
                ws.onerror = ws.onclose = () => done('refused');
            })""",
            api_port,
        )
        assert socket_outcome == "refused"
        assert f"http://127.0.0.1:{api_port}/api/runs" in page.blocked
        assert f"ws://127.0.0.1:{api_port}/socket" in page.blocked
    assert api_hits == []


async def test_warm_sessions_are_handed_out_ready_and_fresh(
    browser: Browser, site: tuple[int, list[str]]
) -> None:
    port, _hits = site
    with anyio.fail_after(30):
        while len(browser._warm) < browser.warm_sessions:  # noqa: ASYNC110 - polling a private counter
            await anyio.sleep(0.05)
    warm = list(browser._warm)
    async with browser.session(allowed_origins=_local(port)) as page:
        assert page in warm  # handed out from the warm set, not opened on demand
        assert page.page.url == "about:blank"
        await page.navigate(f"http://127.0.0.1:{port}/")
        assert await page.page.evaluate("localStorage.getItem('seen')") == "first"
        assert any("tracker.png" in url for url in page.blocked)  # warm sessions check the network too


async def test_sessions_are_isolated(browser: Browser, site: tuple[int, list[str]]) -> None:
    port, _hits = site
    async with (
        browser.session(allowed_origins=_local(port)) as first,
        browser.session(allowed_origins=_local(port)) as second,
    ):
        for page in (first, second):
            await page.navigate(f"http://127.0.0.1:{port}/")
        await first.page.reload()
        assert await first.page.evaluate("localStorage.getItem('seen')") == "again"
        assert await second.page.evaluate("localStorage.getItem('seen')") == "first"


async def test_open_browser_without_a_shared_process(site: tuple[int, list[str]]) -> None:
    port, _hits = site
    async with open_browser(allowed_origins=_local(port)) as page:
        await page.navigate(f"http://127.0.0.1:{port}/")
        assert "Test page" in await page.page.title()
    with pytest.raises(SandboxError, match="Chromium"):
        async with open_browser(executable_path="/nonexistent/chromium"):
            pass


def _last_observation(request: ModelRequest) -> str:
    blocks = [b for m in request.messages for b in m.blocks if isinstance(b, ToolResultBlock)]
    output = blocks[-1].output
    return output if isinstance(output, str) else "\n".join(getattr(b, "text", "") for b in output)


async def test_browser_agent_drives_the_page(browser: Browser, site: tuple[int, list[str]]) -> None:
    port, _hits = site

    def click_the_button(request: ModelRequest) -> object:
        observation = _last_observation(request)
        assert "Snapshot:" in observation
        ref = re.search(r'button "Press me" \[ref=(e\d+)\]', observation)
        assert ref is not None, observation
        return tool_call("browser_click", ref=ref.group(1))

    def answer(request: ModelRequest) -> object:
        observation = _last_observation(request)
        assert "clicked" in observation
        assert len([b for b in request.messages[-1].blocks if isinstance(b, ToolResultBlock)]) == 1
        return "The page says clicked."

    model = ScriptedModel(
        [
            tool_call("browser_navigate", url=f"http://127.0.0.1:{port}/"),
            click_the_button,  # type: ignore[list-item]
            answer,  # type: ignore[list-item]
        ]
    )
    async with browser.session(allowed_origins=_local(port)) as page:
        agent = BrowserAgent("surfer", model, page, screenshots=True)
        assert "browser_click" in model_tools(agent)
        reply = await agent(Msg(role="user", content="Press the button"))
        assert reply.text == "The page says clicked."
        model.assert_complete()
        images = [
            b
            for m in model.requests[-1].messages
            for r in m.blocks
            if isinstance(r, ToolResultBlock) and not isinstance(r.output, str)
            for b in r.output
            if isinstance(b, ImageBlock)
        ]
        assert images, "screenshots=True puts a screenshot in every observation"


async def test_browser_tools_say_what_happened(browser: Browser, site: tuple[int, list[str]]) -> None:
    port, _hits = site
    async with browser.session(allowed_origins=_local(port), timeout_s=1) as page:
        tools = {tool.__name__: tool for tool in make_browser_tools(page)}
        opened = await tools["browser_navigate"](url=f"http://127.0.0.1:{port}/")
        assert not opened.is_error
        assert opened.text_content.startswith(f"Opened http://127.0.0.1:{port}/ (status 200).\nURL: ")
        assert 'heading "Hello"' in opened.text_content
        # Refused by the page itself: the reason alone, as an error.
        refused = await tools["browser_click"](ref="not-a-ref")
        assert refused.is_error
        assert (
            refused.text_content
            == "'not-a-ref' is not an element ref: use one of the [ref=eN] of the snapshot, e.g. e3"
        )
        blocked = await tools["browser_navigate"](url="http://example.com/")
        assert blocked.is_error
        assert blocked.text_content.startswith("http://example.com/ is not reachable from this browser")
        # Failed in Playwright (no element e9999: a timeout): an error with the page as it is now.
        failed = await tools["browser_click"](ref="e9999")
        assert failed.is_error
        assert failed.text_content.startswith("Failed: ")
        assert 'heading "Hello"' in failed.text_content
        shot = await tools["browser_screenshot"]()
        assert isinstance(shot.content[0], ImageBlock)


def model_tools(agent: BrowserAgent) -> set[str]:
    return {schema.name for schema in agent.toolkit.schemas()}
