"""The dashboard's debounced refresh in real Chromium: while events keep coming it still fires at
least every maxWait (a busy team's page froze until its events stopped), and it fires once more
after they stop."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import LiveServer

pytestmark = pytest.mark.xdist_group("browser")

# Calls every 50 ms for 2 s, into debounce(fn, 100 ms, maxWait); resolves with when fn ran (ms
# after the first call) and when the calls stopped.
DRIVE = """(maxWait) => new Promise((resolve) => {
  const fired = [];
  const t0 = performance.now();
  const soon = window.Orch.debounce(() => fired.push(performance.now() - t0), 100, maxWait);
  let calls = 0;
  const every = setInterval(() => {
    soon();
    if (++calls === 40) {
      clearInterval(every);
      const stopped = performance.now() - t0;
      setTimeout(() => resolve({ fired: fired, stopped: stopped }), 400);
    }
  }, 50);
})"""


def test_debounce_fires_while_events_keep_coming(live_server: LiveServer, page: Any) -> None:
    page.goto(f"{live_server.url}/dashboard")
    page.wait_for_function("window.Orch !== undefined")
    busy = page.evaluate(DRIVE, 500)
    during = [t for t in busy["fired"] if t < busy["stopped"]]
    assert len(during) >= 3, busy  # about every 500 ms over 2 s
    assert all(b - a < 1000 for a, b in zip([0, *during], during, strict=False)), busy
    assert busy["fired"][-1] > busy["stopped"], busy  # and once after the last call
    # Without a maximum wait it is the plain trailing debounce: once, after the calls stop.
    plain = page.evaluate(DRIVE, None)
    assert len(plain["fired"]) == 1 and plain["fired"][0] > plain["stopped"], plain
