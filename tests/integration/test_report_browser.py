"""The iteration report in a real headless browser (Debian's chromium, installed by
scripts/install_tools.sh): the page loads from the file alone, every figure decodes to a
picture of its size, and the screenshot shows them drawn."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from report_example import SEARCHES, iteration

from services.coordinator import report, report_figures
from services.coordinator.journal import Journal
from services.coordinator.state import StateStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FIGURES = 5
#: Sent to the page only in this test: after load, it writes each image's decoded size
#: into the DOM, which --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight]);
  document.body.setAttribute("data-images", JSON.stringify(images));
});
</script>"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install_tools.sh"), "chromium"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"scripts/install_tools.sh chromium failed:\n{result.stderr}"
    return Path(result.stdout.strip().splitlines()[-1]) / "bin" / "chromium"


def browse(chromium: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless run with a fresh profile and nothing reaching out to the network."""
    return subprocess.run(
        [
            str(chromium), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--hide-scrollbars", "--virtual-time-budget=10000", *args,
        ],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_the_report_renders_with_its_figures_in_chromium(chromium: Path, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.save_iteration(iteration())
    Journal(store.iteration_dir(3) / "searches.jsonl").append(SEARCHES)
    page = report.write(store, 3)

    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    # One browser start (the slow part) prints the DOM and takes the screenshot; the probe
    # only sets an attribute, so the picture is the report's own.
    shot = tmp_path / "report.png"
    run = browse(
        chromium, tmp_path / "profile", "--window-size=1000,2200", "--dump-dom",
        f"--screenshot={shot}", probed.as_uri(),
    )  # fmt: skip
    found = re.search(r'data-images="([^"]*)"', run.stdout)
    assert found, f"the page did not load:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    images = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(images) == FIGURES
    for alt, width, height in images:
        assert width > 200 and height > 100, f"{alt} did not decode: {width}x{height}"

    assert shot.is_file(), run.stderr[-2000:]
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1000, 2200)
        colours = {c for _, c in rgb.getcolors(1 << 20) or []}
    # The figures' bar colours are on the page: drawn, not just laid out.
    for hex_colour in (
        report_figures.AFTER,
        report_figures.BEFORE,
        report_figures.OUTCOME_COLOURS["refined"],
    ):
        rgb_colour = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb_colour in colours, f"{hex_colour} is not in the screenshot"
