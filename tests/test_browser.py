"""The report in a real browser: it renders offline, safely, without errors.

`probe.report.write_report` writes a page from a synthetic result whose study name,
attributes, grid labels, variable attributes and run status carry script-injection payloads.
Headless Chromium opens it over the Chrome DevTools Protocol (on a pipe, `--remote-debugging-pipe`:
no websocket client, no driver) and the test checks that

- no JavaScript exception and no console or log error occurs;
- no request leaves the page for anything but file:, data:, blob: or about: URLs (every
  other request is blocked and recorded);
- every chart container holds a non-empty <svg> or <canvas>;
- no payload ran: window.__pwned is undefined and no injected element exists.

Skipped, with the reason, when no Chromium is installed (`apt-get install chromium`).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_report import make_result

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
TIMEOUT_S = 25.0

PAYLOADS = (
    "</script><script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "<svg onload=window.__pwned=1></svg>",
    '"><script>window.__pwned=1</script><a x="',
    "';window.__pwned=1;//",
    "{{window.__pwned=1}}",
    "javascript:window.__pwned=1",
    "<iframe src=https://example.com/x></iframe>",
    "<link rel=stylesheet href=https://example.com/x.css>",
)


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def hostile_result():
    """A result whose every free-text field carries an injection payload."""
    evil = " ".join(PAYLOADS)
    ds = make_result(grid={"estimator": ["infonce", PAYLOADS[1]]}, seeds=2, steps=4, study=PAYLOADS[0])
    ds.attrs.update(title=evil, preset=PAYLOADS[2], dataset=PAYLOADS[3], device=PAYLOADS[4], created=PAYLOADS[5],
                    seeds=PAYLOADS[6], settings_json=json.dumps({"note": evil}), probe_version=PAYLOADS[7],
                    torch_version=PAYLOADS[8], figure=evil)
    ds["bound_test"].attrs.update(long_name=PAYLOADS[1], units=PAYLOADS[0])
    ds["probe_accuracy"].attrs["long_name"] = PAYLOADS[3]
    ds["status"] = ds["status"].astype(object)
    ds["status"][...] = "ok"
    ds["status"][0, 0] = evil
    return ds


class DevTools:
    """The Chrome DevTools Protocol over --remote-debugging-pipe: fd 3 in, fd 4 out, JSON + NUL."""

    def __init__(self, binary: str, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:  # the protocol's fixed descriptors: 3 = commands, 4 = replies
            # Move both ends above 3 and 4 first: either may itself be fd 3 or 4.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        args = [binary, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--allow-file-access-from-files", f"--user-data-dir={profile}",
                "about:blank"]
        # pass_fds=(3, 4): the child keeps the descriptors child_fds put there, and closes the rest.
        # A new session, so close() can end Chromium's helper processes with their group.
        self.process = subprocess.Popen(args, preexec_fn=child_fds, pass_fds=(3, 4), start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._next_id, self.events = b"", 0, []

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (OSError, TimeoutError, ConnectionError, RuntimeError):
            pass
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # helpers left over in Chromium's own group
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = TIMEOUT_S) -> dict:
        """Send one command; return its result (events that arrive meanwhile go to self.events)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def drain(self, seconds: float) -> None:
        """Collect events for `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    binary = _browser()
    if binary is None:
        pytest.skip("no Chromium found (looked for " + ", ".join(BROWSERS) + "); "
                    "install Debian's `chromium` package to run the browser test")
    from probe.report import write_report

    folder = tmp_path_factory.mktemp("browser")
    page = write_report(hostile_result(), folder / "hostile.html")
    tools = DevTools(binary, folder / "profile")
    try:
        yield _render(tools, page)
    finally:
        tools.close()


CHART_STATE = """(() => {
  const charts = [...document.querySelectorAll('div.chart')];
  return JSON.stringify({
    total: charts.length,
    drawn: charts.filter(c => {
      const svg = c.querySelector('svg'), canvas = c.querySelector('canvas');
      if (svg) { const box = svg.getBoundingClientRect(); return svg.childElementCount > 0 && box.width > 0 && box.height > 0; }
      return !!canvas && canvas.width > 0 && canvas.height > 0;
    }).map(c => c.id),
    failed: charts.filter(c => c.textContent.includes('could not be drawn')).map(c => c.id + ': ' + c.textContent),
  });
})()"""

INJECTED = """JSON.stringify({
  pwned: typeof window.__pwned,
  imgs: document.querySelectorAll('img').length,
  iframes: document.querySelectorAll('iframe').length,
  links: document.querySelectorAll('link').length,
  scripts: document.querySelectorAll('script').length,
  onerror: document.querySelectorAll('[onerror], [onload]').length,
  title: document.title,
})"""


def _render(tools: DevTools, page: Path) -> dict:
    target = next(t for t in tools.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
    session = tools.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        tools.send(f"{domain}.enable", session=session)
    # Block (and so record as failed) anything that would leave the machine.
    tools.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]},
               session=session)
    started = time.monotonic()
    tools.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    state = {}
    while time.monotonic() - started < TIMEOUT_S:
        tools.drain(0.25)
        value = tools.send("Runtime.evaluate", {"expression": CHART_STATE, "returnByValue": True},
                           session=session)["result"].get("value")
        state = json.loads(value) if value else {}
        if state.get("total") and len(state["drawn"]) + len(state["failed"]) == state["total"]:
            break
    tools.drain(0.5)  # late console errors and requests
    injected = json.loads(tools.send("Runtime.evaluate", {"expression": INJECTED, "returnByValue": True},
                                     session=session)["result"]["value"])
    return {"charts": state, "injected": injected, "events": tools.events, "seconds": time.monotonic() - started,
            "expected_scripts": page.read_text(encoding="utf-8").count("<script")}


def _errors(events: list[dict]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}")
    return found


def test_no_script_error(rendered):
    assert _errors(rendered["events"]) == []


def test_no_request_leaves_the_page(rendered):
    urls = [e["params"]["request"]["url"] for e in rendered["events"] if e.get("method") == "Network.requestWillBeSent"]
    assert urls, "the page's own load was not seen; is the Network domain recording?"
    remote = [url for url in urls if not url.startswith(LOCAL_SCHEMES)]
    assert remote == []


def test_every_chart_is_drawn(rendered):
    charts = rendered["charts"]
    assert charts.get("total", 0) >= 4, charts
    assert charts["failed"] == [], charts["failed"]
    assert len(charts["drawn"]) == charts["total"], charts


def test_no_payload_ran(rendered):
    injected = rendered["injected"]
    assert injected["pwned"] == "undefined"
    assert injected["imgs"] == injected["iframes"] == injected["links"] == injected["onerror"] == 0, injected
    assert injected["scripts"] == rendered["expected_scripts"] == 3, injected  # bundle, payload JSON, bootstrap
    assert "window.__pwned=1" in injected["title"]  # shown as text, not run


def test_renders_quickly(rendered):
    assert rendered["seconds"] < TIMEOUT_S
