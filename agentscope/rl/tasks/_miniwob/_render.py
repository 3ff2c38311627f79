"""What the agent sees of a MiniWoB++ page: the instruction and a compact accessibility tree with element refs.

The tree is Playwright's AI-mode ARIA snapshot of the page (the refs ``[ref=eN]`` the browser tools act on),
trimmed to the task:

- the elements the benchmark's own DOM observation (``core.getDOMInfo``) leaves out are left out too: the
  instruction bar (given as text instead), the reward display, the start cover and the click canvas; so are live
  regions (``status``: announcements for screen readers, such as jQuery UI's "1 result is available");
- nameless ``generic`` wrappers (layout ``div`` s) disappear and their children move up; a text repeating the
  name of the element before it (a checkbox's label) is dropped; link targets, ``[active]`` and
  ``[cursor=pointer]`` marks are dropped.

Before each snapshot, elements that show a pointer cursor (the page's sign of "click me") but that the
accessibility tree would not show get a role, which is the only change made to a page (no task reads roles):

- an inline element holding only text (MiniWoB's ``<span class="alink">`` links) becomes a ``link``: Playwright
  folds such an element into its parent's text, which would leave a clickable word without a ref;
- an empty box (an icon, a tree's expand toggle) becomes a nameless ``button``;
- when the instruction shows a jQuery UI icon (``click-menu-2``: "the item with the <icon> icon"), icons are named
  after their class (``img "disk icon"``), in the tree and in the instruction alike.

A simple task renders in a few dozen tokens, e.g. ``click-button`` (seed 3)::

    Task: Click on the "no" button.
    - button "no" [ref=e5]
    - textbox [ref=e6]
    - generic [ref=e7]: erat enim ipsum
    - button "Okay" [ref=e8]
    - button "okay" [ref=e9]
    - generic [ref=e10]: aenean pulvinar pellentesque
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, cast

import yaml

__all__ = ["PREPARE_JS", "Node", "parse_tree", "render_nodes", "render_snapshot"]

logger = logging.getLogger("agentscope.rl.tasks")

PREPARE_JS = """() => {
  for (const id of ['reward-display', 'sync-task-cover', 'click-canvas', 'query', 'attention-canvas']) {
    const element = document.getElementById(id);
    if (element) element.setAttribute('aria-hidden', 'true');
  }
  const controls = 'a, button, input, select, textarea, label, [role=button], [role=link], [role=tab], ' +
    '[role=menuitem], [role=option], [role=checkbox], [role=radio], [role=treeitem]';
  const iconName = element => {
    const icon = Array.from(element.classList).find(c => c.startsWith('ui-icon-'));
    return icon ? icon.slice(8).replace(/-/g, ' ') : null;
  };
  const query = document.getElementById('query');
  const iconsMatter = !!(query && query.querySelector('[class*="ui-icon-"]'));
  const candidates = document.body.querySelectorAll('span, div, i, b, u, em, strong, small, font');
  for (const element of candidates) {
    if (element.hasAttribute('role') || element.hasAttribute('aria-hidden')) continue;
    if (element.closest('#reward-display, #sync-task-cover, #query')) continue;
    const parent = element.parentElement;
    const icon = iconName(element);
    if (icon) {
      if (iconsMatter && !element.closest('button')) {
        element.setAttribute('role', 'img');
        element.setAttribute('aria-label', icon + ' icon');
      }
      continue;
    }
    if (element.childElementCount) continue;
    const style = getComputedStyle(element);
    if (style.cursor !== 'pointer' || style.visibility === 'hidden') continue;
    if (parent && parent.closest(controls)) continue;
    const text = element.textContent.trim();
    if (text) {
      if (style.display === 'inline' && !(parent && getComputedStyle(parent).cursor === 'pointer')) {
        element.setAttribute('role', 'link');
      }
    } else {
      const box = element.getBoundingClientRect();
      if (box.width >= 4 && box.height >= 4) element.setAttribute('role', 'button');
    }
  }
  let utterance = core.getUtterance();
  if (iconsMatter) {
    const copy = query.cloneNode(true);
    for (const icon of copy.querySelectorAll('[class*="ui-icon-"]')) icon.textContent = ' ' + iconName(icon) + ' ';
    utterance = copy.textContent.replace(/\\s+/g, ' ').trim();
  }
  return {
    utterance: utterance,
    done: WOB_DONE_GLOBAL,
    reward: WOB_REWARD_GLOBAL,
    raw: WOB_RAW_REWARD_GLOBAL,
    reason: WOB_REWARD_REASON === null || WOB_REWARD_REASON === undefined ? null : String(WOB_REWARD_REASON),
  };
}"""
"""Run before each snapshot: hides the non-task elements from the accessibility tree, exposes text links, and
returns the instruction and the episode's state from the page's own globals."""

_KEY = re.compile(r'^(?P<role>[\w-]+)(?: (?P<name>"(?:[^"\\]|\\.)*"))?(?P<attrs>(?: \[[^\]]*\])*)$')
_ATTR = re.compile(r"\[([^\]=]+)(?:=([^\]]*))?\]")
_DROPPED_ATTRS = frozenset({"active", "cursor", "box"})
_EMPTY_DROPPED = frozenset({"generic", "paragraph"})
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""What YAML refuses in a document (PyYAML's reader check)."""
_LIVE_REGIONS = frozenset({"status", "log", "marquee", "timer"})  # announcements for screen readers


@dataclass(slots=True)
class Node:
    """One element of the rendered tree."""

    role: str
    """ARIA role (``button``, ``textbox``, ``link``...), or ``text`` for a run of text."""
    name: str = ""
    """Accessible name."""
    ref: str = ""
    """The ``eN`` ref the tools act on ('' when the element has none)."""
    text: str = ""
    """Text content shown after the colon (for ``text``: the text itself)."""
    attrs: dict[str, str] = field(default_factory=dict[str, str])
    """States such as ``checked``, ``selected``, ``expanded`` (value '' when it has none)."""
    children: list[Node] = field(default_factory=list["Node"])
    """Child elements."""
    hidden: bool = False
    """Marked ``aria-hidden`` (left out of the rendering with its subtree)."""


def _parse_key(key: str) -> Node:
    match = _KEY.match(key.strip())
    if match is None:
        return Node(role="text", text=key)
    name = json.loads(match["name"]) if match["name"] else ""
    attrs: dict[str, str] = {}
    hidden = False
    ref = ""
    for attr, value in _ATTR.findall(match["attrs"] or ""):
        if attr == "ref":
            ref = value
        elif attr == "aria-hidden":
            hidden = True
        elif attr not in _DROPPED_ATTRS:
            attrs[attr] = value
    return Node(role=match["role"], name=name, ref=ref, attrs=attrs, hidden=hidden)


def _parse_items(items: list[Any]) -> list[Node]:
    nodes: list[Node] = []
    for item in items:
        if isinstance(item, str):
            nodes.append(_parse_key(item))
            continue
        if not isinstance(item, dict):
            continue
        for key, value in cast("dict[str, Any]", item).items():
            if key == "text":
                nodes.append(Node(role="text", text=str(value)))
                continue
            if key.startswith("/"):  # /url, /placeholder: properties of the parent
                continue
            node = _parse_key(key)
            if isinstance(value, list):
                children = cast("list[Any]", value)
                for child in children:
                    if isinstance(child, dict) and "/placeholder" in child:
                        node.attrs["placeholder"] = str(cast("dict[str, Any]", child)["/placeholder"])
                node.children = _parse_items(children)
            elif value is not None:
                node.text = str(value)
            nodes.append(node)
    return nodes


def parse_tree(snapshot: str) -> list[Node]:
    """Playwright's AI-mode ARIA snapshot (YAML) as nodes, every scalar kept as a string.

    Characters YAML does not allow (control characters a page may hold, as ``unicode-test`` does) become U+FFFD.

    Raises:
        yaml.YAMLError: the snapshot is not YAML.
    """
    snapshot = _NON_PRINTABLE.sub("\ufffd", snapshot)
    loaded: Any = yaml.load(snapshot, Loader=yaml.BaseLoader) if snapshot.strip() else []
    return _parse_items(cast("list[Any]", loaded) if isinstance(loaded, list) else [])


def _simplify(nodes: list[Node]) -> list[Node]:
    out: list[Node] = []
    for node in nodes:
        if node.hidden or node.role in _LIVE_REGIONS:
            continue
        node.children = _simplify(node.children)
        if node.role == "generic" and not node.name and not node.text and node.children:
            out.extend(node.children)  # a layout wrapper: its children move up
            continue
        if node.role in _EMPTY_DROPPED and not node.name and not node.text and not node.children:
            continue  # an empty box, an empty live region
        if node.role == "text" and out and node.text.strip() == out[-1].name.strip():
            continue  # a label repeating the control's name
        out.append(node)
    return out


def _line(node: Node, depth: int) -> str:
    head = "  " * depth + "- " + node.role
    if node.role == "text":
        return f"{head}: {node.text}"
    if node.name:
        head += " " + json.dumps(node.name, ensure_ascii=False)
    for attr, value in node.attrs.items():
        head += f" [{attr}={value}]" if value else f" [{attr}]"
    if node.ref:
        head += f" [ref={node.ref}]"
    if node.text:
        head += f": {node.text}"
    elif node.children:
        head += ":"
    return head


def render_nodes(nodes: list[Node], depth: int = 0) -> list[str]:
    """The rendering's lines for ``nodes`` (already simplified)."""
    lines: list[str] = []
    for node in nodes:
        lines.append(_line(node, depth))
        lines.extend(render_nodes(node.children, depth + 1))
    return lines


def render_snapshot(snapshot: str) -> tuple[str, list[Node]]:
    """The compact rendering of an AI-mode snapshot, and its nodes (top level). A snapshot that does not parse is
    shown as it is (refs and all) rather than failing the episode."""
    try:
        nodes = _simplify(parse_tree(snapshot))
    except yaml.YAMLError:
        logger.warning(
            "miniwob: an ARIA snapshot did not parse as YAML; showing it unrendered", exc_info=True
        )
        return snapshot, []
    return "\n".join(render_nodes(nodes)) or "(nothing on the page)", nodes
