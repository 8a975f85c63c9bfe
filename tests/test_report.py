"""The run page (genzoo report RUN): self-contained, escaped, holding the run's numbers,
leading with the answer, its numbers rounded as a person writes them, laid out at a
phone's width and a desktop's in headless Chromium."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from genzoo.cli import main
from genzoo.pagekit import nice_ticks, significant, with_error
from genzoo.report import RunFiles, time_text, write_run_report
from genzoo.runs import append_metrics, lock_run, unlock_run
from genzoo.studies.page import study_table, write_study_report

SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/gif": b"GIF8"}


class PageParser(HTMLParser):
    """Collects the page's images, script tags, and the text of each table's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.scripts = 0
        self.tables: list[list[list[str]]] = []  # table -> row -> cell texts
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag == "script":
            self.scripts += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table_with(self, header: str) -> list[list[str]]:
        """The table whose first row starts with ``header``."""
        return next(t for t in self.tables if t and t[0] and t[0][0] == header)


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.fixture
def run(data_dir: Path, tmp_path: Path) -> Path:
    """A tiny trained and evaluated VAE run, with a GIF among its figures (as DRAW's)."""
    run = tmp_path / "run"
    tiny = ["--epochs", "2", "--batch-size", "16", "--val-size", "20", "--hidden", "8"]
    assert (
        main(["train", "vae", *tiny, "--latent-dim", "2", "--device", "cpu", "--run-dir", str(run)])
        == 0
    )
    assert main(["eval", str(run), "--iw-samples", "5"]) == 0
    frames = [Image.new("L", (8, 8), shade) for shade in (0, 255)]
    frames[0].save(run / "figures" / "drawing.gif", save_all=True, append_images=frames[1:])
    return run


def test_page_is_self_contained_with_every_figure(run: Path) -> None:
    page = write_run_report(run)
    assert page == run / "report.html"
    parsed, text = parse(page), page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert '<meta name="viewport"' in text
    figures = sorted(p.name for p in (run / "figures").iterdir())
    assert "drawing.gif" in figures and "curves.png" in figures
    # One per figure file, and the samples again where the page begins.
    assert sorted(img["alt"] for img in parsed.images) == sorted([*figures, "samples.png"])
    for img in parsed.images:
        head, _, payload = img["src"].partition(",")
        mime = head.removeprefix("data:").removesuffix(";base64")
        assert head.startswith("data:") and head.endswith(";base64")
        assert base64.b64decode(payload, validate=True).startswith(SIGNATURES[mime])
    assert parsed.scripts == 1  # the page's own, inline


def test_page_holds_the_runs_numbers(run: Path) -> None:
    parsed = parse(write_run_report(run))
    result = json.loads((run / "eval.json").read_text())
    figures = {label: cells for label, *cells in parsed.table_with("figure")[1:]}
    assert figures["-ELBO"] == [with_error(result["neg_elbo"], result["neg_elbo_se"]), "2"]
    assert figures["NLL"][0] == with_error(result["nll"], result["nll_se"])
    protocol = dict(parsed.table_with("protocol")[1:])
    assert protocol["test figures shown"] == result["protocol"]
    assert protocol["split"] == "test" and protocol["images"] == str(result["n_examples"])
    assert protocol["likelihood"] == "importance sampling, K=5, proposal q(z|x) (estimate)"
    assert protocol["binarization"] == result["binarize"]

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    table = parsed.table_with("epoch")
    assert len(table) - 1 == len(metrics) == 2  # a header, then a row per epoch
    assert [row[0] for row in table[1:]] == ["1", "2"]

    environment = dict(parsed.tables[-1])  # no header row
    seconds = sum(m["seconds"] for m in metrics)
    assert environment["training seconds (all epochs)"] == significant(seconds)
    # The command's time: each epoch's pass with its validation, then the figures.
    summary = json.loads((run / "summary.json").read_text())
    assert all(m["wall_seconds"] >= m["seconds"] for m in metrics)
    wall = sum(m["wall_seconds"] for m in metrics) + summary["finishing_seconds"]
    assert summary["finishing_seconds"] > 0
    assert environment["seconds of training with validation, probes and figures"] == significant(
        wall
    )
    assert {"genzoo", "torch", "python", "device", "page written"} <= environment.keys()


def test_the_lead_gives_the_commands_minutes_and_the_passes_where_they_differ(
    tmp_path: Path,
) -> None:
    metrics = [{"epoch": e, "seconds": 600.0, "wall_seconds": 660.0} for e in (1, 2)]
    probed = RunFiles(tmp_path, {}, metrics, None, {"finishing_seconds": 120.0})
    assert time_text(probed) == "24 min (training passes 20 min)"
    older = [{"epoch": 1, "seconds": 30.0}]  # before wall_seconds was recorded: the pass
    assert time_text(RunFiles(tmp_path, {}, older, None, {})) == "30 s"


def test_figures_measured_before_the_run_moved_on_are_marked(run: Path) -> None:
    """The run evaluated at epoch 2 trains a third epoch: its figures say they are of
    epoch 2 and that the run has moved on."""
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    append_metrics(run, {**last, "epoch": 3})
    parsed = parse(write_run_report(run))
    figures = {label: cells for label, *cells in parsed.table_with("figure")[1:]}
    assert figures["NLL"][1] == "2 (the run has trained to epoch 3 since)"
    protocol = dict(parsed.table_with("protocol")[1:])
    assert protocol["epoch of the weights"] == "2 (the run has trained to epoch 3 since)"


def test_page_shows_every_quality_score_says_what_each_measures_and_keeps_others(
    run: Path,
) -> None:
    scores = {"fid": 3.0, "inception_score": 9.1, "inception_score_std": 0.05}
    scores |= {"inception_splits": 10, "precision": 0.9, "recall": 0.8, "density": 1.02}
    scores |= {"coverage": 0.95, "parzen_ll": 200.0, "parzen_ll_se": 1.0}
    scores |= {"quality_protocol": "40 samples against 30 grey-level test images"}
    scores |= {"quality_epoch": 1, "quality_run_epochs": 1}
    result = json.loads((run / "eval.json").read_text())
    older = {"protocol": "test split, 10 images", "epoch": 1}
    result["evaluations"]["figures"]["test split, 10 images"] = older
    (run / "eval.json").write_text(json.dumps({**result, **scores}))
    page = write_run_report(run)
    parsed, text = parse(page), page.read_text(encoding="utf-8")
    figures = {label: cells for label, *cells in parsed.table_with("figure")[1:]}
    assert figures["Inception score (± standard deviation over 10 splits)"][0] == "9.100 ± 0.050"
    density = figures["density (real neighbourhoods around each sample, / k)"]
    assert density == ["1.02", "1 (the run has trained to epoch 2 since)"]
    assert figures["coverage (share of real neighbourhoods holding a sample)"][0] == "0.95"
    assert "Naeem et al. 2020" in text and "Theis, van den Oord &amp; Bethge 2016" in text
    assert parsed.table_with("kind")[1:] == [["figures", "test split, 10 images", "1"]]


def test_curves_are_inline_svg_with_a_value_per_point(run: Path) -> None:
    text = write_run_report(run).read_text(encoding="utf-8")
    svg = text[text.index("<svg") : text.index("</svg>")]
    assert svg.count("<circle") == 4  # training loss and validation -ELBO, two epochs each
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"validation -ELBO, epoch 2: {significant(last['val_neg_elbo'])}</title>" in svg


def test_strings_from_files_are_escaped(run: Path, tmp_path: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    config["model_config"]["activation"] = "<script>alert('config')</script>"
    config["note"] = '"><img src=x onerror=alert(1)>'
    (run / "config.json").write_text(json.dumps(config))
    result = json.loads((run / "eval.json").read_text())
    result["units"] = "<b>nats</b>"
    (run / "eval.json").write_text(json.dumps(result))

    page = write_run_report(run, tmp_path / "elsewhere" / "page.html")
    text, parsed = page.read_text(encoding="utf-8"), parse(page)
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#x27;config&#x27;)" in text
    assert "<img src=x" not in text and "<b>nats" not in text
    assert parsed.scripts == 1
    assert all(img["src"].startswith("data:") for img in parsed.images)
    config_rows = parse(page).table_with("group")
    assert ["model", "activation", "<script>alert('config')</script>"] in config_rows


def test_numbers_are_written_as_a_person_writes_them() -> None:
    # A value with its standard error: the error to two figures, the value to its place.
    assert with_error(92.4712, 0.2371) == "92.47 ± 0.24"
    assert with_error(1234.6, 34.2) == "1235 ± 34"
    assert with_error(12345.6, 347.0) == "12350 ± 350"
    assert with_error(0.0123456, 0.000987) == "0.01235 ± 0.00099"
    assert with_error(5.0, 0.0996) == "5.00 ± 0.10"  # the error rounds up to 0.10
    assert with_error(7.25, None) == "7.25"
    assert with_error(7.0, 0.0) == "7 ± 0"  # no precision to give
    # Others to four significant figures, every digit of a longer whole part kept.
    assert [significant(v) for v in (0.0065822, 26.026, 0.94732, 1.0)] == [
        "0.006582",
        "26.03",
        "0.9473",
        "1",
    ]
    assert significant(123456.7) == "123457" and significant(float("nan")) == "nan"
    assert significant(9999.7) == "10000" and significant(-9999.96) == "-10000"  # no 1e+04


def test_page_leads_with_the_answer(run: Path) -> None:
    """What the run is, its best validation figure, its test figures with their protocol
    and its samples come before the contents line, the curves and the tables."""
    text = write_run_report(run).read_text(encoding="utf-8")
    lead = text[text.index('<p class="lead">') : text.index("<nav>")]
    assert text.index("<nav>") < text.index('id="eval"') < text.index('id="curves"')
    assert "vae on mnist, binarize=dynamic: trained 2 epochs; " in lead
    assert 'alt="samples.png"' in lead
    parsed = PageParser()
    parsed.feed(lead)
    facts = {label: value for label, value in parsed.tables[0]}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(metrics, key=lambda m: m["val_neg_elbo"])
    value = significant(best["val_neg_elbo"])
    assert facts["best validation -ELBO"] == f"{value}epoch {best['epoch']}"
    result = json.loads((run / "eval.json").read_text())
    nll = facts["test NLL"]
    assert nll.startswith(with_error(result["nll"], result["nll_se"]) + result["protocol"])
    assert nll.endswith("weights of epoch 2") and "K=5" in nll


def test_a_run_stopped_or_being_trained_says_so(run: Path) -> None:
    (run / "summary.json").unlink()  # killed before training came to its end
    text = write_run_report(run).read_text(encoding="utf-8")
    assert f"stopped after 2 of 2 epochs (continue: genzoo resume {run})" in text
    assert lock_run(run)  # as a training holds it
    try:
        assert "being trained: 2 of 2 epochs done" in write_run_report(run).read_text()
    finally:
        unlock_run(run)


def test_page_of_a_run_without_eval_or_epochs(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "vae", "train": {}, "model_config": {}}))
    text = write_run_report(run).read_text(encoding="utf-8")
    assert "Not evaluated yet" in text and "No epoch has finished yet" in text


def test_cli_writes_the_page_and_refuses_a_missing_folder(run: Path, tmp_path: Path, capsys):
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert (run / "report.html").stat().st_size > 0
    out = tmp_path / "pages" / "run.html"
    assert main(["report", str(run), "-o", str(out)]) == 0 and out.is_file()

    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder" in err

    (run / "config.json").write_text("[1, 2]")  # JSON, but not a config
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json is not a genzoo file" in err


def test_nice_ticks_are_round_and_inside_the_range() -> None:
    assert nice_ticks(0.0, 10.0) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(557.1, 564.8) == [558, 560, 562, 564]
    assert nice_ticks(0.95, 2.05, integer=True) == [1, 2]
    assert nice_ticks(0.95, 1.05, integer=True) == [1]


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Headless Chromium lays a page out at least this wide, whatever the window; narrower
# widths (a phone's) are laid out in an iframe of that width (``laid_out``).
LEAST_LAYOUT_WIDTH = 500
PHONE, DESKTOP = 390, 1280  # CSS pixels


def _chromium(tmp_path: Path, *args: str, width: int = 420) -> subprocess.CompletedProcess:
    chromium = shutil.which("chromium")
    profile = tmp_path / "chromium-profile"
    window = f"--window-size={width},2000"
    command = [chromium, *CHROMIUM_FLAGS, window, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# Measures the page once it has loaded (after the page's own script has counted its
# images) and puts the measurements on <body data-probe>, and hands them to the page
# that frames it, if any.
PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const root = document.documentElement;
  const boxes = Array.from(document.querySelectorAll(".scroll"));
  const probe = JSON.stringify({
    width: window.innerWidth,
    overflow: root.scrollWidth - root.clientWidth,
    scrolling: boxes.filter(box => box.scrollWidth > box.clientWidth).length,
    images: document.body.dataset.imagesLoaded,
  });
  document.body.dataset.probe = probe;
  if (parent !== window) parent.postMessage(probe, "*");
}));
</script>"""
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{src}" style="width:{width}px;height:2000px;border:0"></iframe>
<script>addEventListener("message", e => {{ document.body.dataset.probe = e.data; }});</script>
</body></html>"""


def laid_out(tmp_path: Path, page: Path, width: int, script: str = "") -> dict[str, Any]:
    """The page laid out ``width`` CSS pixels wide in headless Chromium, after ``script``:
    its width, how far it runs off the side (0: not at all), how many of its boxes scroll
    sideways, and its images loaded of all. A copy beside the page runs the probe, so
    that its relative links and images still resolve."""
    probed = page.with_name(f".probed-{page.name}")
    probed.write_text(page.read_text().replace("</body>", f"{script}{PROBE}</body>"))
    url = probed.as_uri()
    if width < LEAST_LAYOUT_WIDTH:
        frame = page.with_name(".frame.html")
        frame.write_text(FRAME.format(src=probed.name, width=width))
        url = frame.as_uri()
    window = max(width, LEAST_LAYOUT_WIDTH)
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url, width=window)
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def write_study(folder: Path, run: Path, columns: int = 10) -> Path:
    """A study folder around a copy of ``run``, its table ``columns`` figures wide."""
    shutil.copytree(run, folder / "vae")
    figures = {f"c{i}": 100.0 + i for i in range(columns)}
    row = {"arm": "vae", "model": "vae", "runs": ["vae"], **figures}
    row |= {f"c{i}_spread": 0.25 for i in range(columns)}
    row |= {"minutes": 0.1, "parameters": 1234, "units": "nats", "protocol": "test split"}
    study = {"study": "tiny", "question": "Does a tiny study show?", "answer": "Yes."}
    study |= {"quick": True, "seeds": 1, "figures": ["samples.png"], "rows": [row]}
    study |= {"columns": {f"c{i}": f"figure number {i}" for i in range(columns)}}
    study["commands"] = ["genzoo train vae --epochs 2"]
    (folder / "study.json").write_text(json.dumps(study))
    return folder


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium)",
)
def test_page_in_headless_chromium(run: Path, tmp_path: Path) -> None:
    page = write_run_report(run)
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", page.resolve().as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (420, 2000)
        assert len(image.convert("L").getcolors(256)) > 16  # not a blank page

    # The page's script counts the images that decoded once the page has loaded.
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri())
    n = len(list((run / "figures").iterdir())) + 1  # and the samples where the page begins
    assert f'data-images-loaded="{n}/{n}"' in dom.stdout

    # A click on the epoch header twice sorts the metrics table by epoch, descending.
    clicking = tmp_path / "clicking.html"
    click = "<script>for (const i of [0, 1]) document.querySelector('table.sortable th').click();"
    clicking.write_text(page.read_text().replace("</body>", click + "</script></body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", clicking.as_uri())
    parsed = PageParser()
    parsed.feed(dom.stdout)
    assert [row[0] for row in parsed.table_with("epoch")[1:]] == ["2", "1"]


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium)",
)
@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_run_and_study_pages_fit_a_phone_and_a_desktop(run: Path, tmp_path: Path, width: int):
    """Nothing runs off the side of the page; the study's wide table scrolls in its box."""
    n = len(list((run / "figures").iterdir())) + 1  # every figure, and the samples again
    probe = laid_out(tmp_path, write_run_report(run), width)
    assert probe["width"] == width and probe["overflow"] == 0
    assert probe["images"] == f"{n}/{n}"

    study = write_study_report(write_study(tmp_path / "study", run))
    probe = laid_out(tmp_path, study, width)
    assert probe["width"] == width and probe["overflow"] == 0
    loaded, total = probe["images"].split("/")
    assert loaded == total
    if width == PHONE:  # too wide for a phone: the table scrolls in its box, not the page
        assert probe["scrolling"] >= 1


def test_study_table_shows_a_dash_where_an_arm_has_no_figure() -> None:
    study = {"columns": {"fid": "FID"}, "seeds": 1}
    study["rows"] = [
        {"arm": "a", "model": "ae", "fid": 65.857, "fid_spread": None, "minutes": 1.5},
        {"arm": "b", "model": "vae", "fid": 70.0, "fid_spread": 0.25},
        {"arm": "c", "model": "vae", "minutes": 2.5, "pass_minutes": 2.0},
    ]
    html = study_table(study)
    assert "null" not in html and "None" not in html
    parser = PageParser()
    parser.feed(html)
    header, first, second, third = parser.tables[0]
    assert header[:5] == [
        "arm",
        "model",
        "FID",
        "minutes (training command)",
        "of them training passes",
    ]
    # A row of a study.json written before the command's minutes were kept: its minutes
    # were the training passes'.
    assert first == ["a", "ae", "65.86", "-", "1.5", "-", "-", "-"]
    assert second[:3] == ["b", "vae", "70.00 ± 0.25"]  # to the spread's precision
    assert third[3:5] == ["2.5", "2"]  # a row of today's: the command's, then the passes
