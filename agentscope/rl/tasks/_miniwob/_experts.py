"""Scripted policies for MiniWoB++: an expert per wired task, and a random policy for any task.

Both read only the conversation, as a model would: the latest observation (the instruction and the rendered
accessibility tree, ``Task: ...`` then ``- role "name" [ref=eN]: text`` lines) and the tool calls made so far in
the episode. The expert recognises the task by its instruction (the page's own words), never by its name, and
answers with the next tool call; when the episode is over it answers in words. It proves that the observation and
the four tools suffice to solve each wired task, and its episodes are demonstrations.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agentscope.message import Msg, TextBlock, ToolResultBlock, ToolUseBlock
from agentscope.models import ScriptItem, tool_call
from agentscope.rl.envs import ScriptedPolicy

__all__ = ["EXPERT_TASKS", "Element", "Page", "miniwob_expert", "miniwob_random_policy", "read_page"]

_OVER = "The episode is over"
_LINE = re.compile(
    r'^(?P<indent> *)- (?P<role>[\w-]+)(?: (?P<name>"(?:[^"\\]|\\.)*"))?(?P<attrs>(?: \[[^\]]*\])*)(?::(?: (?P<text>.*))?)?$'
)
_ATTR = re.compile(r"\[([^\]=]+)(?:=([^\]]*))?\]")


@dataclass(slots=True)
class Element:
    """One line of the rendered tree."""

    role: str
    name: str
    ref: str
    text: str
    attrs: dict[str, str]
    depth: int
    parent: Element | None = None
    children: list[Element] = field(default_factory=list["Element"])

    @property
    def label(self) -> str:
        """The name, else the text, else the labels of the children (an icon and a word) joined."""
        return self.name or self.text or " ".join(c.label for c in self.children if c.label)

    def has(self, attr: str) -> bool:
        """Whether the element shows the state ``attr`` (``checked``, ``selected``, ``expanded``...)."""
        return attr in self.attrs


@dataclass(slots=True)
class Page:
    """An observation as the policy reads it."""

    utterance: str
    elements: list[Element]

    def find(self, role: str | tuple[str, ...], name: str | None = None) -> list[Element]:
        """The elements of ``role`` (one of several), named ``name`` when given, in document order."""
        roles = (role,) if isinstance(role, str) else role
        return [e for e in self.elements if e.role in roles and (name is None or e.label == name)]

    def first(self, role: str | tuple[str, ...], name: str | None = None) -> Element | None:
        """The first of :meth:`find`, or None."""
        found = self.find(role, name)
        return found[0] if found else None


def read_page(text: str) -> Page | None:
    """Parse an observation; None when it shows no page (the episode is over, or an error)."""
    utterance: str | None = None
    elements: list[Element] = []
    stack: list[Element] = []
    for line in text.splitlines():
        if line.startswith("Task: "):
            utterance = line.removeprefix("Task: ").strip()
            continue
        match = _LINE.match(line)
        if match is None or utterance is None:
            continue
        attrs: dict[str, str] = {}
        ref = ""
        for attr, value in _ATTR.findall(match["attrs"] or ""):
            if attr == "ref":
                ref = value
            else:
                attrs[attr] = value
        depth = len(match["indent"]) // 2
        element = Element(
            role=match["role"],
            name=json.loads(match["name"]) if match["name"] else "",
            ref=ref,
            text=match["text"] or "",
            attrs=attrs,
            depth=depth,
        )
        while stack and stack[-1].depth >= depth:
            stack.pop()
        if stack:
            element.parent = stack[-1]
            stack[-1].children.append(element)
        stack.append(element)
        elements.append(element)
    if utterance is None:
        return None
    return Page(utterance=utterance, elements=elements)


def _result_text(block: ToolResultBlock) -> str:
    output = block.output
    if isinstance(output, str):
        return output
    return "\n".join(b.text for b in output if isinstance(b, TextBlock))


def observations(messages: Sequence[Msg]) -> list[str]:
    """The observations of the conversation, newest first: tool results, then the task message."""
    out: list[str] = []
    for msg in reversed(messages):
        if msg.role == "tool":
            out.extend(_result_text(b) for b in reversed(msg.blocks_of(ToolResultBlock)))
        elif msg.role == "user" and msg.name != "system":  # "system": the agent's own out-of-steps hint
            out.append(msg.text)
    return out


def latest_observation(messages: Sequence[Msg]) -> str:
    """The newest observation of the conversation ('' when there is none)."""
    found = observations(messages)
    return found[0] if found else ""


def _out_of_steps(messages: Sequence[Msg]) -> bool:
    return bool(messages) and messages[-1].role == "user" and messages[-1].name == "system"


def calls_so_far(messages: Sequence[Msg]) -> list[ToolUseBlock]:
    """The tool calls of the episode that worked (their result is not an error), in order."""
    failed = {b.id for m in messages if m.role == "tool" for b in m.blocks_of(ToolResultBlock) if b.is_error}
    return [c for m in messages if m.role == "assistant" for c in m.tool_calls if c.id not in failed]


# ---------------------------------------------------------------------- the experts

Action = ToolUseBlock | None
Solver = Callable[[re.Match[str], Page, list[ToolUseBlock]], Action]


def _click(element: Element | None) -> Action:
    return tool_call("click", ref=element.ref) if element is not None and element.ref else None


def _clicked(calls: list[ToolUseBlock]) -> set[str]:
    return {str(c.input.get("ref")) for c in calls if c.name == "click"}


def _click_button(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    return _click(page.first("button", m[1]))


def _click_sequence(m: re.Match[str], page: Page, calls: list[ToolUseBlock]) -> Action:
    done = sum(1 for c in calls if c.name == "click")
    order = [m[1], m[2]]
    return _click(page.first("button", order[min(done, 1)]))


def _click_only_button(_m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    return _click(page.first("button"))


def _click_link(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    return _click(page.first("link", m[1]))


def _dialog_button(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    label = m[1]
    return _click(page.first("button", "Close" if label == "x" else label))


def _click_tab(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    return _click(page.first(("link", "tab"), f"Tab #{m[1]}"))


def _find_link_behind(kind: str) -> Solver:
    """Open the tabs (or sections) one by one until the link is visible, then click it."""

    def solve(m: re.Match[str], page: Page, calls: list[ToolUseBlock]) -> Action:
        target = page.first("link", m[1])
        if target is not None and not _is_opener(target, kind):
            return _click(target)
        clicked = _clicked(calls)
        openers = _openers(page, kind)
        if kind == "tab" and openers:
            clicked.add(openers[0].ref)  # the first tab is the one shown at the start
        for opener in openers:
            open_now = opener.has("selected") or opener.has("expanded")
            if opener.ref not in clicked and not open_now:
                return _click(opener)
        return None

    return solve


def _openers(page: Page, kind: str) -> list[Element]:
    if kind == "tab":  # jQuery UI tabs: tab > link "Tab #N"; the tab carries [selected]
        out: list[Element] = []
        for tab in page.find("tab"):
            link = next((c for c in tab.children if c.role == "link"), None)
            if link is not None:
                if tab.has("selected"):
                    link.attrs["selected"] = ""
                out.append(link)
        return out
    return [t for t in page.find("tab") if t.name.startswith("Section")]


def _is_opener(element: Element, kind: str) -> bool:
    return kind == "tab" and element.parent is not None and element.parent.role == "tab"


def _expand_then_submit(_m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    section = next((t for t in page.find("tab") if t.name.startswith("Section")), None)
    if section is not None and not section.has("expanded"):
        return _click(section)
    return _click(page.first("button", "Submit"))


def _select_then_submit(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    wanted = [] if m[1] == "nothing" else [w.strip() for w in m[1].split(",") if w.strip()]
    for control in page.find(("checkbox", "radio")):
        should = control.label in wanted
        if should != control.has("checked"):
            if control.role == "radio" and not should:
                continue  # a radio is unchecked by choosing another
            return _click(control)
    return _click(page.first("button", "Submit"))


def _choose_from_list(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    box = page.first("combobox")
    if box is None:
        return None
    chosen = next((o.label for o in box.children if o.role == "option" and o.has("selected")), None)
    if chosen != m[1]:
        return tool_call("select", ref=box.ref, option=m[1])
    return _click(page.first("button", "Submit"))


def _menu_button(m: re.Match[str], page: Page, calls: list[ToolUseBlock]) -> Action:
    label, icon = m[1], m[2]
    items = [i for i in page.find("menuitem") if not i.has("disabled")]
    for item in items:
        words = item.label
        if (label and (words == label or words.endswith(f" icon {label}"))) or (
            icon and words.startswith(f"{icon} icon ")
        ):
            return _click(item)
    if not items:
        return _click(page.first("button", "Menu"))
    playback = next((i for i in items if i.label.endswith("Playback")), None)  # the rest are in its submenu
    if playback is not None and calls and calls[-1].input.get("ref") == playback.ref:
        return tool_call(
            "press", key="ArrowRight"
        )  # the submenu opens on a hover delay; the key opens it now
    return _click(playback)


def _focus_nth(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    index = {"1st": 0, "2nd": 1, "3rd": 2}.get(m[1], 0) if m.re.groups else 0
    boxes = page.find("textbox")
    return _click(boxes[index]) if index < len(boxes) else None


def _fill_then_press(values: Callable[[re.Match[str]], list[str]], button: str) -> Solver:
    """Type each value into the text fields in order (skipping those already right), then click ``button``."""

    def solve(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
        wanted = values(m)
        boxes = page.find("textbox")
        for box, value in zip(boxes, wanted, strict=False):
            if box.text != value.strip():  # the tree shows a field's value without its outer spaces
                return tool_call("type", ref=box.ref, text=value)
        return _click(page.first("button", button))

    return solve


def _iso_date(m: re.Match[str]) -> list[str]:
    month, day, year = m[1], m[2], m[3]
    return [f"{year}-{month}-{day}"]


def _navigate_tree(m: re.Match[str], page: Page, calls: list[ToolUseBlock]) -> Action:
    target = next((e for e in page.elements if e.role == "generic" and e.text == m[1]), None)
    if target is not None:
        return _click(target)
    clicked = _clicked(calls)
    for item in page.find("listitem"):
        toggle = next((c for c in item.children if c.role == "button"), None)
        is_open = any(c.role == "list" for c in item.children)
        if toggle is not None and not is_open and toggle.ref not in clicked:
            return _click(toggle)
    return None


def _autocomplete(m: re.Match[str], page: Page, calls: list[ToolUseBlock]) -> Action:
    start, end = m[1], m[2] or ""
    box = page.first("textbox")
    if box is None:
        return None
    if box.text.startswith(start) and box.text.endswith(end) and box.text != start.strip():
        if page.find("listitem") and not (calls and calls[-1].input.get("key") == "Escape"):
            return tool_call("press", key="Escape")  # the suggestions cover the button
        return _click(page.first("button", "Submit"))
    for item in page.find(("menuitem", "option", "generic")):  # the suggestions: list > listitem > generic
        if item.ref and item.label.startswith(start) and item.label.endswith(end) and item.label != start:
            return _click(item)
    if box.text != start.strip():  # the tree shows a field's value without its outer spaces
        return tool_call("type", ref=box.ref, text=start)
    if calls and calls[-1].name == "press":
        return None  # the list did not open
    return tool_call("press", key="ArrowDown")  # opens the suggestions at once


def _click_widget(m: re.Match[str], page: Page, _calls: list[ToolUseBlock]) -> Action:
    role = {"button": "button", "checkbox": "checkbox", "radio": "radio"}.get(m[1])
    return _click(page.first(role)) if role is not None else None


_SOLVERS: list[tuple[re.Pattern[str], Solver]] = [
    (re.compile(r'^Click on the "(.+)" button\.$'), _click_button),
    (re.compile(r"^Click button (ONE), then click button (TWO)\.$"), _click_sequence),
    (re.compile(r"^Click button (ONE|TWO)\.$"), _click_button),
    (re.compile(r"^Click the button\.$"), _click_only_button),
    (re.compile(r'^Click on the link "(.+)"\.$'), _click_link),
    (re.compile(r'^Close the dialog box by clicking the "(x)"\.$'), _dialog_button),
    (re.compile(r'^Click the button in the dialog box labeled "(.+)"\.$'), _dialog_button),
    (re.compile(r"^Click on Tab #(\d+)\.$"), _click_tab),
    (
        re.compile(r'^Switch between the tabs to find and click on the link "(.+)"\.$'),
        _find_link_behind("tab"),
    ),
    (re.compile(r"^Expand the section below and click submit\.$"), _expand_then_submit),
    (
        re.compile(r'^Expand the sections below, to find and click on the link "(.+)"\.$'),
        _find_link_behind("section"),
    ),
    (re.compile(r"^Select (.+) from the list and click Submit\.$"), _choose_from_list),
    (
        re.compile(r"^Select (?!words similar to)(?!.* from the scroll list)(.+) and click Submit\.$"),
        _select_then_submit,
    ),
    (
        re.compile(
            r'^Click the "Menu" button, and then find and click on the item (?:labeled "(.+)"|with the (.+) icon)\.$'
        ),
        _menu_button,
    ),
    (re.compile(r"^Focus into the textbox\.$"), _focus_nth),
    (re.compile(r"^Focus into the (1st|2nd|3rd) input textbox\.$"), _focus_nth),
    (
        re.compile(r'^Enter "(.+)" into the text field and press Submit\.$'),
        _fill_then_press(lambda m: [m[1]], "Submit"),
    ),
    (
        re.compile(r'^Type "(.+)" in all upper case letters in the text input and press Submit\.$'),
        _fill_then_press(lambda m: [m[1].upper()], "Submit"),
    ),
    (
        re.compile(r'^Type "(.+)" in all lower case letters in the text input and press Submit\.$'),
        _fill_then_press(lambda m: [m[1].lower()], "Submit"),
    ),
    (
        re.compile(r'^Enter the password "(.+)" into both text fields and press submit\.$'),
        _fill_then_press(lambda m: [m[1], m[1]], "Submit"),
    ),
    (
        re.compile(
            r'^Enter the username "(.+)" and the password "(.+)" into the text fields and press login\.$'
        ),
        _fill_then_press(lambda m: [m[1], m[2]], "Login"),
    ),
    (
        re.compile(r"^Enter (\d\d)/(\d\d)/(\d{4}) as the date and hit submit\.$"),
        _fill_then_press(_iso_date, "Submit"),
    ),
    (
        re.compile(r'^Navigate through the file tree\. Find and click on the folder or file named "(.+)"\.$'),
        _navigate_tree,
    ),
    (re.compile(r'^Enter an item that starts with "(.+?)"(?: and ends with "(.+?)")?\.$'), _autocomplete),
    (re.compile(r'^Click on a "(button|checkbox|radio)" widget\.$'), _click_widget),
]

EXPERT_TASKS: tuple[str, ...] = (
    "choose-list",
    "click-button",
    "click-button-sequence",
    "click-checkboxes",
    "click-checkboxes-large",
    "click-checkboxes-transfer",
    "click-collapsible",
    "click-collapsible-2",
    "click-collapsible-2-nodelay",
    "click-collapsible-nodelay",
    "click-dialog",
    "click-dialog-2",
    "click-link",
    "click-menu-2",
    "click-option",
    "click-tab",
    "click-tab-2",
    "click-tab-2-easy",
    "click-tab-2-hard",
    "click-tab-2-medium",
    "click-test",
    "click-test-2",
    "click-test-transfer",
    "enter-date",
    "enter-password",
    "enter-text",
    "enter-text-2",
    "enter-text-dynamic",
    "focus-text",
    "focus-text-2",
    "login-user",
    "navigate-tree",
    "use-autocomplete",
    "use-autocomplete-nodelay",
)
"""The tasks the expert solves (the wired tasks): their instructions match one of its patterns."""

_DONE_ANSWER = "Done."


def miniwob_expert() -> ScriptedPolicy:
    """A policy that solves the wired MiniWoB++ tasks from the conversation alone (see the module docstring).

    On an instruction it does not know, or a page where it sees no way forward, it gives up with a short answer
    (the episode then ends unsolved, reward 0).
    """

    def policy(messages: list[Msg]) -> ScriptItem:
        observation = latest_observation(messages)
        if _OVER in observation or _out_of_steps(messages):
            return _DONE_ANSWER
        page = read_page(observation)
        if page is None:  # an error (a bad ref): the page is the one seen before
            page = next((p for p in map(read_page, observations(messages)) if p is not None), None)
        if page is None:
            return "I cannot see the page."
        calls = calls_so_far(messages)
        for pattern, solve in _SOLVERS:
            match = pattern.match(page.utterance)
            if match is not None:
                action = solve(match, page, calls)
                return action if action is not None else "I see no way to finish this task."
        return "I do not know how to do this task."

    return policy


# ---------------------------------------------------------------------- the random policy

_KEYS = ("Enter", "Tab", "ArrowDown", "ArrowUp", "Space", "Backspace")


def miniwob_random_policy(seed: int = 0) -> ScriptedPolicy:
    """A policy acting at random over the refs the latest observation shows, until the episode is over.

    Each step it picks one of the page's refs and acts on it by its kind: a text field gets ``type`` (a word of
    the instruction or random letters, even odds), a drop-down ``select`` (a random option of it), anything
    else ``click``; one step in ten is a ``press`` of a random key instead. It never answers before the page
    says the episode is over, so its episodes end when the page does or at the agent's step limit.

    Its draws depend on ``seed``, the episode's first observation, how many episodes began with the same
    observation before it, and the step; not on how the calls of concurrent episodes interleave. (Many pages look
    the same in the tree from seed to seed, ``click-test-2``'s two buttons for one: each episode still gets draws
    of its own.)
    """
    episode_index: dict[str, int] = {}  # first message id -> its rank among episodes that began the same way
    started: dict[str, int] = {}  # first observation -> episodes begun with it

    def policy(messages: list[Msg]) -> ScriptItem:
        if _OVER in latest_observation(messages) or _out_of_steps(messages):
            return _DONE_ANSWER
        seen = observations(messages)
        first = next((m for m in messages if m.role == "user" and m.name != "system"), None)
        opening = first.text if first is not None else ""
        key = first.id if first is not None else ""
        if key not in episode_index:
            episode_index[key] = started.get(opening, 0)
            started[opening] = episode_index[key] + 1
        steps = sum(1 for m in messages if m.role == "assistant")
        rng = random.Random(f"{seed}/{opening}/{episode_index[key]}/{steps}")
        page = next((p for p in map(read_page, seen) if p is not None), None)
        refs = [e for e in page.elements if e.ref] if page is not None else []
        if not refs or rng.random() < 0.1:
            return tool_call("press", key=rng.choice(_KEYS))
        element = rng.choice(refs)
        if element.role in ("textbox", "searchbox"):
            words = re.findall(r"[\w-]+", page.utterance) if page is not None else []
            letters = "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 8)))
            text = rng.choice(words) if words and rng.random() < 0.5 else letters
            return tool_call("type", ref=element.ref, text=text)
        if element.role in ("combobox", "listbox"):
            options = [o.label for o in element.children if o.role == "option"]
            if options:
                return tool_call("select", ref=element.ref, option=rng.choice(options))
        return tool_call("click", ref=element.ref)

    return policy
