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

A second page, from a result with one injected outlier (an NWJ excursion to -400 nats) and
long titles, checks the charts' layout as drawn at 1400 px: the outlier's chart keeps a y axis
that shows the curves, no title or subtitle runs outside its figure or under vega-embed's
actions menu, and no two tick labels of an axis touch.

A third pair of pages carries confidence intervals (`<name>_ci`): the `probe analyze` page with
its error bars and a one-seed study page with interval bands; both draw every chart without error.

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
import xarray as xr
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


def outlier_result():
    """A result whose training bound has one excursion far off the curves, and long titles."""
    ds = make_result(seeds=3, steps=6, failed=False)
    ds["bound_train"].values[1, 0, 2] = -400.0  # one NWJ seed at step 8,000: its mean is about -130
    ds.attrs["title"] = "Bijective encoders: the bound and the accuracy rise while the true MI stays constant"
    ds["v_information"].attrs["long_name"] = "V-information of the labels under a multinomial logistic family V"
    return ds


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    binary = _browser()
    if binary is None:
        pytest.skip("no Chromium found (looked for " + ", ".join(BROWSERS) + ")")
    from probe.report import write_report

    folder = tmp_path_factory.mktemp("layout")
    page = write_report(outlier_result(), folder / "outlier.html")
    tools = DevTools(binary, folder / "profile")
    try:
        rendered = _render(tools, page, expression=LAYOUT, width=1400)
        yield {"charts": json.loads(rendered["extra"]), "state": rendered["charts"], "events": tools.events}
    finally:
        tools.close()


# Per chart: its title, whether any title or subtitle line leaves its <figure> or meets the actions
# menu, and per axis the numbers of its visible tick labels and how many pairs of them touch
# (closer than 2 px). Vega hides labels it thins out with opacity 0.
LAYOUT = """(() => {
  const box = e => { const r = e.getBoundingClientRect(); return {l: r.left, r: r.right, t: r.top, b: r.bottom}; };
  const meets = (a, b, gap) => a.l < b.r + gap && b.l < a.r + gap && a.t < b.b + gap && b.t < a.b + gap;
  const number = s => parseFloat(s.replace(/\u2212/g, '-').replace(/,/g, ''));
  return JSON.stringify([...document.querySelectorAll('div.chart')].map(chart => {
    const figure = box(chart.closest('figure'));
    const summary = chart.querySelector('details > summary');
    const menu = summary ? box(summary) : null;
    const lines = [...chart.querySelectorAll('.role-title-text text, .role-title-subtitle text')].map(box);
    const title = chart.querySelector('.role-title-text');
    const subtitle = chart.querySelector('.role-title-subtitle');
    const axes = [...chart.querySelectorAll('g.role-axis[aria-label]')].map(axis => {
      const labels = [...axis.querySelectorAll('.role-axis-label text')]
        .filter(t => t.getAttribute('opacity') !== '0' && getComputedStyle(t).opacity !== '0');
      const boxes = labels.map(box);
      let touching = 0;
      for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) if (meets(boxes[i], boxes[j], 2)) touching++;
      return {axis: axis.getAttribute('aria-label').split(' ')[0], values: labels.map(t => number(t.textContent)), touching};
    });
    return {id: chart.id, title: title ? title.textContent : '', subtitle: subtitle ? subtitle.textContent : '',
            lines: lines.length, menu: !!menu,
            title_lines: title ? Math.max(1, title.querySelectorAll('tspan').length) : 0,
            clipped: lines.filter(t => t.l < figure.l || t.r > figure.r || t.t < figure.t || (menu && meets(t, menu, 0))).length,
            axes};
  }));
})()"""


def _render(tools: DevTools, page: Path, expression: str | None = None, width: int | None = None) -> dict:
    target = next(t for t in tools.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
    session = tools.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        tools.send(f"{domain}.enable", session=session)
    if width:
        tools.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": 1000, "deviceScaleFactor": 1,
                                                          "mobile": False}, session=session)
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
    extra = None
    if expression:
        extra = tools.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                           session=session)["result"]["value"]
    return {"charts": state, "injected": injected, "events": tools.events, "seconds": time.monotonic() - started,
            "expected_scripts": page.read_text(encoding="utf-8").count("<script"), "extra": extra}


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


def test_layout_page_draws_without_error(layout):
    assert layout["state"]["failed"] == [] and len(layout["state"]["drawn"]) == layout["state"]["total"] >= 10
    assert _errors(layout["events"]) == []


def test_one_outlier_does_not_squash_the_axis(layout):
    chart = next(c for c in layout["charts"] if c["title"] == "bound on training batches")
    ticks = next(a["values"] for a in chart["axes"] if a["axis"] == "Y-axis")
    # The curves run from about -1 to 4.2 nats; the excursion's mean is about -130.
    assert min(ticks) > -10 and max(ticks) < 10, ticks
    assert max(ticks) - min(ticks) >= 4, ticks  # the curves themselves stay in view
    assert "off-scale: nwj at step 8,000" in chart["subtitle"], chart["subtitle"]


def test_no_title_is_clipped_or_under_the_actions_menu(layout):
    charts = layout["charts"]
    assert all(c["menu"] for c in charts)  # the menu is there, so the check means something
    assert all(c["lines"] >= 2 for c in charts)  # title and subtitle found in every chart
    assert [(c["title"], c["clipped"]) for c in charts if c["clipped"]] == []
    long_title = next(c for c in charts if c["title"].startswith("V-information of the labels under"))
    assert long_title["title_lines"] == 2  # wrapped, not run on under the menu


def test_tick_labels_never_touch(layout):
    touching = [(c["title"], a["axis"], a["values"]) for c in layout["charts"] for a in c["axes"] if a["touching"]]
    assert touching == []


@pytest.fixture(scope="module")
def with_intervals(tmp_path_factory):
    binary = _browser()
    if binary is None:
        pytest.skip("no Chromium found (looked for " + ", ".join(BROWSERS) + ")")
    from test_report_intervals import one_seed_result, v_information_result, with_interval

    from probe.report import write_page, write_report
    from probe.report.analysis import analysis_page

    folder = tmp_path_factory.mktemp("intervals")
    margins = with_interval(xr.Dataset({"violation_fraction": (("alpha",), [0.1, 0.4], {"units": "1"})},
                                       coords={"alpha": [0.0, 0.5]}), "violation_fraction", 0.05)
    analysis = write_page(folder / "analysis.html", analysis_page(
        {"v_information": v_information_result(with_ci=True), "triplet_margins": margins}, "probe analyze", {}))
    study = write_report(one_seed_result(with_ci=True), folder / "study.html")
    rendered = {}
    for name, page in (("analysis", analysis), ("study", study)):
        tools = DevTools(binary, folder / f"profile-{name}")
        try:
            rendered[name] = _render(tools, page)
        finally:
            tools.close()
    return rendered


@pytest.mark.parametrize("page", ["analysis", "study"])
def test_pages_with_intervals_draw_every_chart_without_error(with_intervals, page):
    rendered = with_intervals[page]
    assert _errors(rendered["events"]) == []
    charts = rendered["charts"]
    assert charts["failed"] == [] and len(charts["drawn"]) == charts["total"] >= 2, charts
