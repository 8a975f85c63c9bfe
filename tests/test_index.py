"""The index of a folder of runs (genzoo report FOLDER): a row per run with its figures,
linking to its page; pages refreshed where stale; runs being trained or stopped shown as
such; sortable and filterable in headless Chromium at a phone's width and a desktop's."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from genzoo.cli import main
from genzoo.index import write_index
from genzoo.pagekit import significant, with_error
from genzoo.report import samples_figure
from genzoo.runs import lock_run, unlock_run
from test_report import DESKTOP, PHONE, PageParser, _chromium, laid_out, parse, write_study

TINY = ["--epochs", "2", "--batch-size", "16", "--val-size", "20", "--hidden", "8"]
TINY += ["--latent-dim", "2", "--device", "cpu"]
# Sample-quality scores as genzoo eval --quality keeps them (5% to 15% of the samples in
# a class).
QUALITY = {"fid": 12.3456, "class_histogram": [10] * 8 + [5, 15], "n_samples": 100}
QUALITY |= {"quality_protocol": "100 samples against 30 test images"}
QUALITY |= {"quality_epoch": 2, "quality_run_epochs": 2}


def train(model: str, run: Path) -> Path:
    assert main(["train", model, *TINY, "--run-dir", str(run)]) == 0
    return run


@pytest.fixture
def folder(data_dir: Path, tmp_path: Path) -> Path:
    """runs/: a VAE evaluated with sample-quality scores, an autoencoder never evaluated,
    a copy of the VAE stopped short (no summary, no eval), and a study holding another."""
    root = tmp_path / "runs"
    vae = train("vae", root / "vae-z2")
    assert main(["eval", str(vae), "--iw-samples", "5"]) == 0
    result = json.loads((vae / "eval.json").read_text())
    (vae / "eval.json").write_text(json.dumps({**result, **QUALITY}))
    train("ae", root / "ae")
    stopped = Path(shutil.copytree(vae, root / "stopped"))
    for name in ("summary.json", "eval.json", "report.html"):
        (stopped / name).unlink()
    write_study(root / "study", vae)
    return root


def index_rows(page: Path) -> dict[str, dict[str, str]]:
    """The index's runs table: run -> header -> cell text."""
    header, *rows = parse(page).table_with("run")
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_index_has_a_row_per_run_linking_to_its_page(folder: Path) -> None:
    page = write_index(folder)
    assert page == folder / "index.html"
    rows = index_rows(page)
    assert set(rows) == {"ae", "stopped", "study/vae", "vae-z2"}

    vae = rows["vae-z2"]
    result = json.loads((folder / "vae-z2" / "eval.json").read_text())
    metrics = [json.loads(line) for line in (folder / "vae-z2" / "metrics.jsonl").open()]
    assert vae["family"] == "vae" and vae["state"] == "done" and vae["epochs"] == "2"
    assert "latent_dim=2" in vae["settings"] and "hidden=[8]" in vae["settings"]
    assert "seed=" not in vae["settings"]  # a default
    assert vae["validation"] == f"-ELBO {significant(min(m['val_neg_elbo'] for m in metrics))}"
    assert vae["test figure"] == f"NLL {with_error(result['nll'], result['nll_se'])}"
    assert vae["K"] == "5" and vae["FID"] == "12.35" and vae["classes"] == "5.0–15.0%"
    summary = json.loads((folder / "vae-z2" / "summary.json").read_text())
    wall = sum(m["wall_seconds"] for m in metrics) + summary["finishing_seconds"]
    assert vae["minutes"] == significant(wall / 60)  # the command's, figures included

    assert rows["stopped"]["state"] == "stopped" and rows["stopped"]["epochs"] == "2 of 2"
    assert rows["stopped"]["test figure"] == "-" and rows["stopped"]["FID"] == "-"
    assert rows["ae"]["family"] == "ae" and rows["ae"]["validation"].startswith("loss ")

    text = page.read_text(encoding="utf-8")
    links = set(re.findall(r'href="([^"#]+)"', text))
    assert "study/vae/report.html" in links and "study/report.html" in links
    assert all((folder / link).is_file() for link in links)  # every page written
    parsed = parse(page)
    assert parsed.table_with("study")[1][:3] == [
        "study",
        "Does a tiny study show? (--quick: a smoke run)",
        "Yes.",
    ]
    thumbs = [img for img in parsed.images if "thumb" in (img.get("class") or "")]
    assert len(thumbs) == 4 and all(i["src"].startswith("data:image/png;") for i in thumbs)
    assert '<option value="vae">vae (3)</option>' in text and "all (4)" in text
    assert "http://" not in text and "https://" not in text


def test_index_refreshes_the_pages_that_are_stale(folder: Path) -> None:
    write_index(folder)
    page, stopped = folder / "vae-z2" / "report.html", folder / "stopped" / "report.html"
    later = page.stat().st_mtime + 1000
    for path in (page, stopped):
        os.utime(path, (later, later))
    write_index(folder)
    assert page.stat().st_mtime == later  # fresh: left as it was
    assert stopped.stat().st_mtime != later  # a run not done: its state may have changed

    eval_path = folder / "vae-z2" / "eval.json"
    result = json.loads(eval_path.read_text())
    eval_path.write_text(json.dumps({**result, "nll": 77.777, "nll_se": 0.123}))
    os.utime(eval_path, (later + 1, later + 1))
    rows = index_rows(write_index(folder))
    assert rows["vae-z2"]["test figure"] == "NLL 77.78 ± 0.12"
    assert page.stat().st_mtime != later and "77.78 ± 0.12" in page.read_text()


def test_a_run_being_trained_shows_as_such(folder: Path) -> None:
    assert lock_run(folder / "stopped")  # as a training holds it
    try:
        rows = index_rows(write_index(folder))
        assert rows["stopped"]["state"] == "training" and rows["stopped"]["epochs"] == "2 of 2"
        assert "being trained" in (folder / "stopped" / "report.html").read_text()
    finally:
        unlock_run(folder / "stopped")
    assert index_rows(write_index(folder))["stopped"]["state"] == "stopped"


def test_an_unreadable_run_has_a_row_that_says_why(folder: Path) -> None:
    (folder / "ae" / "config.json").write_text("[1, 2]")
    row = index_rows(write_index(folder))["ae"]
    assert row["state"] == "unreadable"
    assert "config.json is not a genzoo file" in row["settings"]


def test_a_samples_figure_cut_short_spoils_its_cell_only(folder: Path) -> None:
    samples = samples_figure(folder / "ae")
    samples.write_bytes(samples.read_bytes()[:100])  # a crash in the middle of writing
    rows = index_rows(write_index(folder))
    assert rows["ae"]["samples"] == f"unreadable {samples.name}"
    assert rows["vae-z2"]["samples"] == ""  # an image: no text in its cell


def test_report_writes_the_page_of_a_run_a_study_or_a_folder(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for target, page in [
        (folder, folder / "index.html"),
        (folder / "study", folder / "study" / "report.html"),
        (folder / "ae", folder / "ae" / "report.html"),
    ]:
        assert main(["report", str(target)]) == 0
        assert capsys.readouterr().out.strip() == str(page) and page.is_file()

    # Elsewhere, the links lead back to the pages.
    out = tmp_path / "pages" / "all.html"
    assert main(["report", str(folder), "-o", str(out)]) == 0
    links = set(re.findall(r'href="([^"#]+)"', out.read_text()))
    assert "../runs/vae-z2/report.html" in links
    assert all((out.parent / link).is_file() for link in links)

    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no run folder" in err


# Shows the VAEs alone, then sorts by the test figure twice (descending).
FILTER_AND_SORT = """<script>
window.addEventListener("load", () => {
  const menu = document.querySelector(".filtered select");
  menu.value = "vae";
  menu.dispatchEvent(new Event("change"));
  const header = Array.from(document.querySelectorAll("th")).find(
    th => th.textContent === "test figure");
  header.click();
  header.click();
});
</script>"""


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium)",
)
@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_index_in_headless_chromium(folder: Path, tmp_path: Path, width: int) -> None:
    page = write_index(folder)
    probe = laid_out(tmp_path, page, width)
    assert probe["width"] == width and probe["overflow"] == 0
    assert probe["images"] == "4/4"
    if width == PHONE:  # too wide for a phone: the table scrolls in its box, not the page
        assert probe["scrolling"] >= 1

    # The menu shows one family; sorted descending, the runs without a figure come last.
    probed = page.with_name("clicked.html")
    probed.write_text(page.read_text().replace("</body>", FILTER_AND_SORT + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    shown = re.findall(r'<tr data-group="(\w+)">', dom.stdout)  # the hidden ones say so
    assert shown == ["vae", "vae", "vae"]
    parsed = PageParser()
    parsed.feed(dom.stdout)
    order = [row[0] for row in parsed.table_with("run")[1:]]
    assert order[-2:] in (["stopped", "ae"], ["ae", "stopped"])  # "-" last either way
