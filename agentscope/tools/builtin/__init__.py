"""Built-in tools: plain functions with good docstrings, for a :class:`~agentscope.tools.Toolkit` (and, through
``serve_mcp``, for any MCP client).

- :func:`calculator`: arithmetic, evaluated safely on the syntax tree.
- :func:`make_file_tools`: ``view_file``, ``write_file``, ``edit_file`` confined to a working directory.
- :func:`make_code_tools`: ``execute_python_code``, ``execute_shell_command`` run inside a sandbox.
- :func:`make_fetch_url`: ``fetch_url``, the text of a page from allowed hosts only (disabled by default).
- :func:`make_browser_tools`: ``browser_navigate``, ``browser_click``... over a browser page (:class:`BrowserLike`).
- :func:`register_builtin_tools`: all of them that a configuration enables, in one call.
"""

from agentscope.tools.builtin._browser import BrowserLike, make_browser_tools
from agentscope.tools.builtin._calculator import calculator
from agentscope.tools.builtin._fetch import html_to_text, make_fetch_url
from agentscope.tools.builtin._files import make_file_tools
from agentscope.tools.builtin._register import register_builtin_tools
from agentscope.tools.builtin._sandboxed import ExecResultLike, SandboxLike, SandboxSource, make_code_tools

__all__ = [
    "BrowserLike",
    "ExecResultLike",
    "SandboxLike",
    "SandboxSource",
    "calculator",
    "html_to_text",
    "make_browser_tools",
    "make_code_tools",
    "make_fetch_url",
    "make_file_tools",
    "register_builtin_tools",
]
