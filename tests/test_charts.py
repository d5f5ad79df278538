"""Server-rendered SVG charts of emerging issues, read back as XML."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.charts import MAX_BUCKETS, issue_chart, sparkline

SVG = "{http://www.w3.org/2000/svg}"


def rows(volumes: list[int], *, start_minute: int = 0) -> list[dict[str, Any]]:
    """Five-minute buckets from 12:00 UTC with the given cluster volumes, as `Issue.counts`."""
    out = []
    for index, volume in enumerate(volumes):
        minutes = start_minute + index * 5
        out.append(
            {
                "at": f"2025-11-25T{12 + minutes // 60:02d}:{minutes % 60:02d}:00Z",
                "posts": volume + 10,
                "negative": volume,
                "cluster": volume,
                "expected": 3.1,
            }
        )
    return out


def parse(svg: str) -> ET.Element:
    # Only this module's own output is parsed, and strictly, as XML must be for inline SVG.
    return ET.fromstring(svg)  # noqa: S314


def bars(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}rect") if e.get("class") == "fw-chart-bar"]


def heights(root: ET.Element) -> list[float]:
    return [float(bar.get("height", "nan")) for bar in bars(root)]


def by_class(root: ET.Element, tag: str, name: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == name]


def points(element: ET.Element) -> list[tuple[float, float]]:
    pairs = (pair.split(",") for pair in element.get("points", "").split())
    return [(float(x), float(y)) for x, y in pairs]


def all_numbers(root: ET.Element) -> list[float]:
    """Every number in a geometric attribute, to check none is NaN or infinite."""
    names = ("x", "y", "width", "height", "x1", "x2", "y1", "y2", "cx", "cy", "r")
    children = [e for e in root.iter() if e is not root]  # the root's width is "100%"
    values = [float(e.get(n, "0")) for e in children for n in names]
    for line in root.iter(f"{SVG}polyline"):
        values += [v for point in points(line) for v in point]
    return values


def text_of(root: ET.Element, tag: str) -> str:
    element = root.find(f"{SVG}{tag}")
    assert element is not None
    return element.text or ""


def test_the_chart_is_a_well_formed_accessible_responsive_svg() -> None:
    root = parse(issue_chart(rows([1, 4, 42, 9]), title="Outage in Dallas"))

    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("width") == "100%"
    assert root.get("viewBox") == "0 0 640 200"
    assert root.get("preserveAspectRatio")
    assert text_of(root, "title") == "Outage in Dallas"
    labelled_by = (root.get("aria-labelledby") or "").split()
    ids = {e.get("id") for e in root.iter() if e.get("id")}
    assert len(labelled_by) == 2
    assert set(labelled_by) <= ids


def test_the_description_says_the_peak_its_time_baseline_and_negative_share() -> None:
    data = rows([1, 4, 42, 9])
    data[2].update(posts=48, negative=42)

    desc = text_of(parse(issue_chart(data, title="t")), "desc")

    assert "Peak 42 posts at 12:10 UTC against a baseline of 3.1; 88% negative." in desc
    assert "4 buckets from 12:00 to 12:15 UTC" in desc


def test_there_is_one_bar_per_row_and_the_tallest_is_the_peak_row() -> None:
    volumes = [3, 7, 2, 42, 11, 0]
    root = parse(issue_chart(rows(volumes), title="t"))

    drawn = heights(root)
    assert len(drawn) == len(volumes)
    assert drawn.index(max(drawn)) == volumes.index(max(volumes))
    assert drawn[-1] == 0
    # Bars are drawn left to right in row order.
    xs = [float(bar.get("x", "nan")) for bar in bars(root)]
    assert xs == sorted(xs)


def test_bars_share_the_volume_scale_and_the_axis_shows_the_max_volume() -> None:
    root = parse(issue_chart(rows([10, 20, 40]), title="t"))

    drawn = heights(root)
    assert drawn[0] / drawn[2] == pytest.approx(0.25, abs=0.01)
    assert drawn[1] / drawn[2] == pytest.approx(0.5, abs=0.01)
    assert [e.text for e in by_class(root, "text", "fw-chart-label fw-chart-max")] == ["40"]


def test_the_baseline_is_a_dashed_line_at_its_level() -> None:
    data = rows([10, 10])
    for row in data:
        row["expected"] = 5.0
    root = parse(issue_chart(data, title="t"))

    (baseline,) = by_class(root, "polyline", "fw-chart-baseline")
    assert baseline.get("stroke-dasharray")
    (bar, _) = bars(root)
    bar_top = float(bar.get("y", "nan"))
    bottom = bar_top + float(bar.get("height", "nan"))
    # Half of the volume: halfway between the bar's top and the axis.
    halfway = (bar_top + bottom) / 2
    assert [y for _, y in points(baseline)] == [pytest.approx(halfway, abs=0.01)] * 3


def test_negative_share_maps_none_to_the_bottom_and_all_to_the_top() -> None:
    data = rows([5, 5, 5])
    data[0].update(posts=10, negative=0)
    data[1].update(posts=10, negative=5)
    data[2].update(posts=10, negative=10)
    root = parse(issue_chart(data, title="t", height=200))

    (share,) = by_class(root, "polyline", "fw-chart-share")
    (y0, y50, y100) = [y for _, y in points(share)]
    bottom = float(bars(root)[0].get("y", "nan")) + float(bars(root)[0].get("height", "nan"))
    (top_rule,) = [e for e in root.iter(f"{SVG}line") if e.get("stroke-dasharray") == "2 3"]
    top = float(top_rule.get("y1", "nan"))
    assert y0 == pytest.approx(bottom)
    assert y100 == pytest.approx(top)
    assert y50 == pytest.approx((top + bottom) / 2, abs=0.01)
    assert len(by_class(root, "circle", "fw-chart-share-point")) == 3


def test_a_bucket_without_posts_breaks_the_share_line_instead_of_reading_as_zero() -> None:
    data = rows([5, 5, 5, 5])
    data[2].update(posts=0, negative=0)
    root = parse(issue_chart(data, title="t"))

    lines = by_class(root, "polyline", "fw-chart-share")
    markers = by_class(root, "circle", "fw-chart-share-point")
    assert [len(points(line)) for line in lines] == [2]
    assert len(markers) == 3  # the lone last point still shows


def test_the_axis_shows_the_first_and_last_times_in_utc() -> None:
    root = parse(issue_chart(rows([1, 2, 3], start_minute=5), title="t"))

    times = [e.text for e in by_class(root, "text", "fw-chart-label fw-chart-time")]
    assert times == ["12:05 UTC", "12:15 UTC"]


def test_a_legend_names_every_series() -> None:
    root = parse(issue_chart(rows([1, 2]), title="t"))

    (legend,) = by_class(root, "g", "fw-chart-legend")
    words = " ".join(e.text or "" for e in legend.iter(f"{SVG}text"))
    assert "Volume" in words
    assert "Baseline" in words
    assert "Negative %" in words


@pytest.mark.parametrize("empty", [[], None])
def test_no_rows_draws_an_empty_chart_that_says_no_data_yet(empty: list[Any] | None) -> None:
    root = parse(issue_chart(empty, title="Quiet"))

    assert bars(root) == []
    assert any(e.text == "no data yet" for e in root.iter(f"{SVG}text"))
    assert text_of(root, "desc") == "No data yet."
    assert root.get("role") == "img"


def test_a_single_row_draws_one_bar_a_visible_baseline_and_one_time() -> None:
    root = parse(issue_chart(rows([7]), title="t"))

    assert len(bars(root)) == 1
    (baseline,) = by_class(root, "polyline", "fw-chart-baseline")
    assert len(points(baseline)) == 2
    assert len(by_class(root, "circle", "fw-chart-share-point")) == 1
    times = [e.text for e in by_class(root, "text", "fw-chart-label fw-chart-time")]
    assert times == ["12:00 UTC"]
    assert "1 bucket at 12:00 UTC" in text_of(root, "desc")


def test_missing_fields_nan_infinity_and_junk_count_as_zero() -> None:
    data: list[Any] = [
        {},
        {"at": "not a time", "posts": float("nan"), "cluster": float("inf")},
        {"at": None, "posts": "12", "negative": -4, "cluster": True, "expected": "nan"},
        {
            "at": "2025-11-25T12:15:00Z",
            "posts": Decimal(10),
            "negative": Decimal(5),
            "cluster": Decimal(8),
            "expected": Decimal("2.5"),
        },
        {"posts": 10**400, "cluster": -float("inf"), "expected": [1]},
        "not a row",
        {"at": "2025-11-25T12:25:00Z", "posts": 0, "negative": 0, "cluster": 0, "expected": 0},
    ]

    svg = issue_chart(data, title="t")
    root = parse(svg)

    assert "nan" not in svg.lower()
    assert "inf" not in svg.lower()
    assert all(math.isfinite(value) for value in all_numbers(root))
    drawn = heights(root)
    assert len(drawn) == len(data)
    assert drawn.index(max(drawn)) == 3
    assert "Peak 8 posts at 12:15 UTC against a baseline of 2.5; 50% negative" in text_of(
        root, "desc"
    )
    times = [e.text for e in by_class(root, "text", "fw-chart-label fw-chart-time")]
    assert times == ["\u2013 UTC", "12:25 UTC"]


def test_a_chart_of_only_zeros_draws_flat_bars_at_the_axis() -> None:
    data = rows([0, 0, 0])
    for row in data:
        row.update(posts=0, negative=0, expected=0)
    root = parse(issue_chart(data, title="t"))

    assert heights(root) == [0, 0, 0]
    assert by_class(root, "polyline", "fw-chart-share") == []
    assert all(math.isfinite(value) for value in all_numbers(root))


def test_a_hostile_title_is_escaped_and_runs_nothing() -> None:
    hostile = (
        '"><script>alert(1)</script><img src=x onerror="alert(2)"> &amp; ]]> \x00\x07\ufffe #outage'
    )

    svg = issue_chart(rows([1, 2]), title=hostile, chart_id='x" onload="alert(3)')
    root = parse(svg)

    assert "<script" not in svg
    assert "<img" not in svg
    tags = {element.tag for element in root.iter()}
    assert f"{SVG}script" not in tags
    assert f"{SVG}img" not in tags
    assert not any(name.startswith("on") for e in root.iter() for name in e.attrib)
    # The words survive as text, minus the characters XML cannot hold.
    assert text_of(root, "title") == (
        '"><script>alert(1)</script><img src=x onerror="alert(2)"> &amp; ]]>  #outage'
    )


def test_a_safe_chart_id_names_the_title_and_desc() -> None:
    root = parse(issue_chart(rows([1]), title="t", chart_id="issue-42"))

    assert root.get("aria-labelledby") == "issue-42-title issue-42-desc"


def test_a_very_long_title_is_cut_short() -> None:
    root = parse(issue_chart(rows([1]), title="x" * 10_000))

    assert len(text_of(root, "title")) <= 200


def test_absurd_sizes_are_clamped_rather_than_drawn() -> None:
    root = parse(issue_chart(rows([1, 2]), title="t", width=-5, height=10**9))

    assert root.get("viewBox") == "0 0 240 2000"
    assert all(value >= 0 for value in heights(root))


def test_long_series_are_downsampled_and_keep_the_peak() -> None:
    volumes = [(i * 7) % 13 for i in range(1_499)]
    volumes[1_234] = 99
    root = parse(issue_chart(rows(volumes), title="t"))

    drawn = heights(root)
    assert len(drawn) == 500  # groups of three
    assert len(drawn) <= MAX_BUCKETS
    assert drawn.index(max(drawn)) == 1_234 // 3
    expected_group_maxima = [max(volumes[i : i + 3]) for i in range(0, len(volumes), 3)]
    scale = max(drawn) / 99
    assert drawn == [pytest.approx(v * scale, abs=0.02) for v in expected_group_maxima]
    desc = text_of(root, "desc")
    assert "Peak 99 posts" in desc
    assert "1499 buckets" in desc
    assert "Showing 500 bars" in desc


def test_output_size_is_bounded_however_many_rows_arrive() -> None:
    small = issue_chart(rows([5] * MAX_BUCKETS), title="t")
    huge = issue_chart(rows([5] * 20_000), title="t")

    assert len(huge) <= len(small) * 1.1


def test_a_sparkline_is_a_small_titled_line() -> None:
    root = parse(sparkline([1, 5, 3, 8], label="Outage <b>&</b>"))

    assert root.get("role") == "img"
    assert root.get("viewBox") == "0 0 120 24"
    title = text_of(root, "title")
    assert title.startswith("Outage <b>&</b>: latest 8")
    (title_element,) = root.iter(f"{SVG}title")
    assert root.get("aria-labelledby") == title_element.get("id")
    (line,) = by_class(root, "polyline", "fw-spark-line")
    ys = [y for _, y in points(line)]
    assert ys.index(min(ys)) == 3  # the highest value is drawn nearest the top


def test_a_sparkline_survives_empty_single_and_non_finite_values() -> None:
    empty = parse(sparkline([], label="quiet"))
    assert "no data yet" in text_of(empty, "title")

    single = parse(sparkline([4.0], label="one"))
    (line,) = by_class(single, "polyline", "fw-spark-line")
    assert len(points(line)) == 2

    odd = sparkline([float("nan"), float("inf"), -float("inf"), 2.0], label="odd")
    assert "nan" not in odd.lower()
    assert "inf" not in odd.lower()
    assert all(math.isfinite(value) for value in all_numbers(parse(odd)))


def test_a_long_sparkline_is_downsampled_and_keeps_its_peak() -> None:
    values = [1.0] * 5_000
    values[4_321] = 50.0
    root = parse(sparkline(values, label="busy"))

    (line,) = by_class(root, "polyline", "fw-spark-line")
    drawn = points(line)
    assert len(drawn) <= MAX_BUCKETS
    assert min(y for _, y in drawn) == pytest.approx(2.0)  # the peak touches the top padding
    assert "high 50" in text_of(root, "title")
