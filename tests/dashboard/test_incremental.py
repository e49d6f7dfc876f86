"""Incremental aggregation: each refresh folds exactly the lines that landed since the last one."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from dashboard.ranges import Range
from dashboard.schema import ReportKind
from dashboard.segments import list_segments
from dashboard.store import RollupStore
from footfall.layout import segment_name, segment_path
from footfall.reports import encode_report
from tests.dashboard.conftest import START, make_records
from tests.dashboard.fixtures import expected, generate

TOPICS: dict[str, ReportKind] = {"visit": "visit", "activity": "activity"}
EVERYTHING = Range(0, 2**50)
LANDED = dt.date(2026, 1, 2)


def views(store: RollupStore) -> dict[str, Any]:
    """Every view over all time, as comparable plain data."""
    r = EVERYTHING
    return {
        "series": Counter(
            {
                (p["t"], k): p[k]
                for p in store.timeseries(r, "minute", ("visit", "activity"))
                for k in ("visit", "activity")
            }
        ),
        "activity": Counter({x["type"]: x["count"] for x in store.activity_types(r)}),
        "algorithm": Counter({x["type"]: x["count"] for x in store.algorithm_types(r)}),
        "durations": Counter({i: d["count"] for i, d in enumerate(store.visit_durations(r))}),
        "pois": Counter({p["poiId"]: p["visits"] for p in store.top_pois(r, "visits", 100)}),
        "geo": Counter({(x, y): n for x, y, n in store.geo(r, 1)}),
        "summary": store.summary()["reports"],
    }


def expected_views(directory: Path) -> dict[str, Any]:
    e = expected(directory, 0, 2**50)
    return {
        "series": Counter({(p["t"], k): p[k] for p in _minute_series(directory) for k in ("visit", "activity")}),
        "activity": Counter({x["type"]: x["count"] for x in e["activity-types"]}),
        "algorithm": Counter({x["type"]: x["count"] for x in e["algorithm-types"]}),
        "durations": Counter(dict(enumerate(e["visit-durations"]))),
        "pois": Counter({str(p): n for p, n in e["poi-visits"].items()}),
        "geo": Counter(e["geo"]),
        "summary": {"visit": e["visits"], "activity": e["activities"]},
    }


def _minute_series(directory: Path) -> list[dict[str, int]]:
    from tests.dashboard.fixtures import read_reports

    out: Counter[tuple[int, str]] = Counter()
    for v in read_reports(directory, "visit"):
        out[(v["enterTime"] // 60_000 * 60_000, "visit")] += 1
    for a in read_reports(directory, "activity"):
        out[(a["startTime"] // 60_000 * 60_000, "activity")] += 1
    ts = sorted({t for t, _ in out})
    return [{"t": t, "visit": out[(t, "visit")], "activity": out[(t, "activity")]} for t in ts]


def _plus(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {k: +(a[k] + b[k]) for k in a if k != "summary"}
    out["summary"] = {t: a["summary"][t] + b["summary"][t] for t in ("visit", "activity")}
    return out


def _positive(v: dict[str, Any]) -> dict[str, Any]:
    return {k: (+x if isinstance(x, Counter) else x) for k, x in v.items()}


def test_adding_a_file_adds_exactly_its_contribution(tmp_path: Path, seed: int) -> None:
    base = make_records(tmp_path / "records", seed)
    extra_dir = tmp_path / "extra"
    visits, activities = generate(seed + 1, 4, 2, START)
    new_visit = segment_path(extra_dir, "visit", LANDED, 0, 10_000)
    new_act = segment_path(extra_dir, "activity", LANDED, 7, 0)
    for path, reports in ((new_visit, visits), (new_act, activities)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(encode_report(r) + b"\n" for r in reports))
    contribution = expected_views(extra_dir)

    with RollupStore(base, base / "_footfall" / "dashboard.duckdb", TOPICS) as store:
        store.refresh()
        before = views(store)
        assert _positive(before) == _positive(expected_views(base))
        # Land the new files in the real directory (a new partition 7 and a later visit segment).
        for src in (new_visit, new_act):
            dst = base / src.relative_to(extra_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
        version = store.version
        result = store.refresh()
        assert result.reports == {"visit": len(visits), "activity": len(activities)}
        assert store.version == version + 1
        after = views(store)
        assert _positive(after) == _positive(_plus(before, contribution))
        # Nothing new: nothing folded, nothing changes.
        assert store.refresh().files_folded == 0
        assert views(store) == after


def test_half_written_last_line_is_folded_once_complete(tmp_path: Path, seed: int) -> None:
    visits, _ = generate(seed, 2, 1, START)
    lines = [encode_report(v) + b"\n" for v in visits]
    path = segment_path(tmp_path, "visit", LANDED, 0, 0)
    path.parent.mkdir(parents=True)
    half = len(lines[5]) // 2
    path.write_bytes(b"".join(lines[:5]) + lines[5][:half])  # open segment, torn last line

    with RollupStore(tmp_path, None, TOPICS) as store:
        r = store.refresh()
        assert r.reports["visit"] == 5 and r.bad_lines == 0
        assert store.summary()["reports"]["visit"] == 5
        # The rest of the line lands, then more lines.
        with path.open("ab") as f:
            f.write(lines[5][half:] + b"".join(lines[6:10]))
        r = store.refresh()
        assert r.reports["visit"] == 5 and r.bad_lines == 0
        assert store.summary()["reports"]["visit"] == 10
        # The segment is closed (a later one starts) with the rest: all counted exactly once.
        with path.open("ab") as f:
            f.write(b"".join(lines[10:15]))
        later = segment_path(tmp_path, "visit", LANDED, 0, 15)
        later.write_bytes(b"".join(lines[15:]))
        store.refresh()
        assert store.summary()["reports"]["visit"] == len(visits)
        assert _positive(views(store)) == _positive(expected_views(tmp_path))
        # Folded in three pieces, compacted into one once closed; results unchanged.
        pieces = store.cursor().execute("SELECT pieces FROM files WHERE path = ?", [str(path)]).fetchone()
        assert pieces == (1,)


def test_bad_lines_are_counted_and_skipped(tmp_path: Path, seed: int) -> None:
    visits, _ = generate(seed, 1, 1, START)
    path = segment_path(tmp_path, "visit", LANDED, 0, 0)
    path.parent.mkdir(parents=True)
    body = [encode_report(v) for v in visits[:4]]
    body.insert(2, b'{"not": "a report"}')
    body.insert(3, b"garbage{")
    body.insert(4, b'{"dataVer":1,"userId":"nope","algorithmType":1,"enterTime":"x"}')
    path.write_bytes(b"\n".join(body) + b"\n")
    segment_path(tmp_path, "visit", LANDED, 0, 99).write_bytes(b"")  # closes the first one
    with RollupStore(tmp_path, None, TOPICS) as store:
        r = store.refresh()
        assert r.reports["visit"] == 4
        assert r.bad_lines == 3
        assert store.summary()["badLines"] == 3


def test_truncated_and_deleted_files_are_refolded_or_dropped(tmp_path: Path, seed: int) -> None:
    visits, activities = generate(seed, 2, 1, START)
    vpath = segment_path(tmp_path, "visit", LANDED, 0, 0)
    apath = segment_path(tmp_path, "activity", LANDED, 0, 0)
    vpath.parent.mkdir(parents=True)
    apath.parent.mkdir(parents=True)
    vlines = [encode_report(v) + b"\n" for v in visits]
    vpath.write_bytes(b"".join(vlines))
    apath.write_bytes(b"".join(encode_report(a) + b"\n" for a in activities))
    with RollupStore(tmp_path, None, TOPICS) as store:
        store.refresh()
        assert store.summary()["reports"] == {"visit": len(visits), "activity": len(activities)}
        # The sink truncated a tail after a crash (and has not rewritten it yet).
        vpath.write_bytes(b"".join(vlines[:7]))
        store.refresh()
        assert store.summary()["reports"]["visit"] == 7
        assert _positive(views(store)) == _positive(expected_views(tmp_path))
        apath.unlink()
        assert store.refresh().dropped_files == 1
        assert store.summary()["reports"] == {"visit": 7, "activity": 0}


def test_state_survives_a_restart_without_double_counting(tmp_path: Path, seed: int) -> None:
    base = make_records(tmp_path / "records", seed)
    db = tmp_path / "state" / "dashboard.duckdb"
    with RollupStore(base, db, TOPICS) as store:
        store.refresh()
        first = views(store)
    with RollupStore(base, db, TOPICS) as store:
        r = store.refresh()
        assert r.files_folded == 0 and r.reports == {"visit": 0, "activity": 0}
        assert views(store) == first


def test_ignores_underscore_dirs_and_foreign_files(tmp_path: Path, seed: int) -> None:
    base = make_records(tmp_path / "records", seed, users=2, days=1)
    (base / "_footfall" / "visit" / "date=2026-01-01").mkdir(parents=True)
    (base / "_footfall" / "visit" / "date=2026-01-01" / "visit+0+00000000000000000000.jsonl").write_text("{}\n")
    (base / "visit" / "date=2026-01-01" / "notes.txt").write_text("hello")
    (base / "visit" / "date=2026-01-01" / "other+0+00000000000000000000.jsonl").write_text("{}\n")
    with RollupStore(base, None, TOPICS) as store:
        store.refresh()
        assert store.summary()["badLines"] == 0
        assert _positive(views(store)) == _positive(expected_views(base))


def test_new_data_visible_within_5_seconds_and_sigterm_exits_0(server_factory: Any, tmp_path: Path, seed: int) -> None:
    base = make_records(tmp_path / "records", seed, users=2, days=1)
    server = server_factory(base, "--refresh-interval", "1")  # the default interval
    total = httpx.get(server.url + "/api/v1/summary").json()["data"]["reports"]["visit"]
    visits, _ = generate(seed + 7, 1, 1, START)
    path = segment_path(base, "visit", LANDED, 3, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    landed = time.monotonic()
    path.write_bytes(b"".join(encode_report(v) + b"\n" for v in visits))
    deadline = landed + 5
    while True:
        now = httpx.get(server.url + "/api/v1/summary").json()["data"]["reports"]["visit"]
        if now == total + len(visits):
            break
        assert time.monotonic() < deadline, f"new data not visible after 5 s ({now} != {total + len(visits)})"
        time.sleep(0.05)
    print(f"new data visible after {time.monotonic() - landed:.2f} s")
    assert server.stop() == 0


def _poi_reports(tmp_path: Path, seed: int, pois: int, visits_per_user: int, users: int) -> list[Any]:
    import random
    import uuid

    from footfall.reports import Visit

    rng = random.Random(seed)
    out = []
    for u in range(users):
        uid = uuid.UUID(int=rng.getrandbits(128), version=4)
        for i in range(visits_per_user):
            t = 1_514_764_800_000 + (u * visits_per_user + i) * 60_000
            poi = min(int(rng.paretovariate(0.8)), pois) if pois > 1 else 1
            out.append(
                Visit(
                    dataVer=1,
                    userId=uid,
                    algorithmType=1,
                    enterTime=t,
                    exitTime=t,
                    poiId=poi,
                    latitude=0.0,
                    longitude=0.0,
                )
            )
    path = segment_path(tmp_path, "visit", LANDED, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(encode_report(v) + b"\n" for v in out))
    return out


def test_top_pois_by_users_threshold_is_exact(tmp_path: Path, seed: int) -> None:
    # Many POIs, a small limit: the candidate search stops early; its answer must equal brute force.
    visits = _poi_reports(tmp_path, seed, pois=500, visits_per_user=40, users=60)
    users: dict[int, set[Any]] = {}
    counts: Counter[int] = Counter()
    for v in visits:
        users.setdefault(v.poiId, set()).add(v.userId)
        counts[v.poiId] += 1
    want = sorted(((-len(u), p) for p, u in users.items()))
    with RollupStore(tmp_path, None, TOPICS) as store:
        store.refresh()
        for limit in (1, 3, 10, 100):
            got = store.top_pois(EVERYTHING, "users", limit)
            assert [(int(g["poiId"]), g["users"]) for g in got] == [(p, -u) for u, p in want[:limit]]
            assert all(g["visits"] == counts[int(g["poiId"])] for g in got)


def test_top_pois_by_users_with_all_ties(tmp_path: Path, seed: int) -> None:
    # One visit per POI (the original profile): every bound ties, the search must widen to all.
    import uuid

    from footfall.reports import Visit

    path = segment_path(tmp_path, "visit", LANDED, 0, 0)
    path.parent.mkdir(parents=True)
    vs = [
        Visit(
            dataVer=1,
            userId=uuid.UUID(int=i + 1, version=4),
            algorithmType=1,
            enterTime=1_514_764_800_000 + i,
            exitTime=1_514_764_800_000 + i,
            poiId=1000 - i,
            latitude=0.0,
            longitude=0.0,
        )
        for i in range(300)
    ]
    path.write_bytes(b"".join(encode_report(v) + b"\n" for v in vs))
    with RollupStore(tmp_path, None, TOPICS) as store:
        store.refresh()
        got = store.top_pois(EVERYTHING, "users", 5)
        assert [int(g["poiId"]) for g in got] == [701, 702, 703, 704, 705]


def test_distinct_users_stay_exact_with_out_of_order_and_dropped_visits(tmp_path: Path, seed: int) -> None:
    import random
    import uuid

    from footfall.reports import Visit

    rng = random.Random(seed)
    t0 = 1_514_764_800_000
    people = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(6)]

    def visits(n: int) -> list[Visit]:
        out = []
        for _ in range(n):
            t = t0 + rng.randrange(0, 120) * 60_000 + rng.randrange(0, 60_000)
            out.append(
                Visit(
                    dataVer=1,
                    userId=rng.choice(people),
                    algorithmType=1,
                    enterTime=t,
                    exitTime=t,
                    poiId=rng.randrange(1, 5),
                    latitude=0.0,
                    longitude=0.0,
                )
            )
        return out

    def land(partition: int, offset: int, vs: list[Visit]) -> Path:
        path = segment_path(tmp_path, "visit", LANDED, partition, offset)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(encode_report(v) + b"\n" for v in vs))
        return path

    def check(store: RollupStore, landed: list[Visit]) -> None:
        for _ in range(40):
            a = rng.randrange(0, 120)
            b = rng.randrange(a + 1, 121)
            r = Range(t0 + a * 60_000, t0 + b * 60_000)
            inside = [v for v in landed if a <= (v.enterTime - t0) // 60_000 < b]
            users: dict[int, set[Any]] = {}
            for v in inside:
                users.setdefault(v.poiId, set()).add(v.userId)
            want = sorted((-len(u), p) for p, u in users.items())
            got = store.top_pois(r, "users", 10)
            assert [(int(g["poiId"]), g["users"]) for g in got] == [(p, -u) for u, p in want], (a, b)
            by_visits = store.top_pois(r, "visits", 10)
            assert all(g["users"] == len(users[int(g["poiId"])]) for g in by_visits)

    first, second, third = visits(150), visits(150), visits(150)
    with RollupStore(tmp_path, None, TOPICS) as store:
        land(0, 0, first)  # time order within a file does not matter either
        store.refresh()
        check(store, first)
        dropped = land(1, 0, second)  # overlaps the first in time: prev links are rewired
        store.refresh()
        check(store, first + second)
        land(2, 0, third)
        dropped.unlink()  # a file disappears: pair links are rebuilt without it
        store.refresh()
        check(store, first + third)


def test_queries_run_safely_while_a_refresh_folds(tmp_path: Path, seed: int) -> None:
    import threading

    base = make_records(tmp_path / "records", seed, users=3, days=2)
    more, _ = generate(seed + 3, 6, 2, START)
    errors: list[BaseException] = []
    seen: dict[int, list[int]] = {}
    done = threading.Event()
    with RollupStore(base, base / "_footfall" / "dashboard.duckdb", TOPICS) as store:
        store.refresh()

        def reader() -> None:
            mine = seen.setdefault(threading.get_ident(), [])
            try:
                while not done.is_set():
                    mine.append(store.summary()["reports"]["visit"])
                    store.top_pois(EVERYTHING, "users", 5)
                    store.geo(EVERYTHING, 5)
            except BaseException as exc:
                errors.append(exc)

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for t in readers:
            t.start()
        try:
            for i in range(0, len(more), 40):
                path = segment_path(base, "visit", LANDED, 5, i)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"".join(encode_report(v) + b"\n" for v in more[i : i + 40]))
                store.refresh()
        finally:
            done.set()
            for t in readers:
                t.join()
        assert errors == []
        for totals in seen.values():
            assert totals == sorted(totals), "a reader saw the total go backwards"
        assert _positive(views(store)) == _positive(expected_views(base))


def test_a_new_log_generation_is_the_open_segment_and_folds_incrementally(tmp_path: Path, seed: int) -> None:
    """After a partition's log starts over, its ``g1`` files come after every ``g0`` file: the
    newest g1 segment is the open one (never read in place) and the old g0 segments are closed."""
    visits, _ = generate(seed, 2, 1, START)
    lines = [encode_report(v) + b"\n" for v in visits]
    old = [segment_path(tmp_path, "visit", LANDED, 0, offset) for offset in (0, 5)]
    old[0].parent.mkdir(parents=True)
    old[0].write_bytes(b"".join(lines[:5]))
    old[1].write_bytes(b"".join(lines[5:10]))
    g1 = [segment_path(tmp_path, "visit", LANDED, 0, 0, generation=1), segment_path(tmp_path, "visit", LANDED, 0, 3, 1)]
    g1[0].write_bytes(b"".join(lines[10:13]))
    half = len(lines[14]) // 2
    g1[1].write_bytes(lines[13] + lines[14][:half])  # the open segment, its last line half-written

    segments = {s.path: s for s in list_segments(tmp_path, TOPICS)}
    assert [segments[p].closed for p in (*old, *g1)] == [True, True, True, False]
    assert [segments[p].generation for p in (*old, *g1)] == [0, 0, 1, 1]
    with RollupStore(tmp_path, None, TOPICS) as store:
        r = store.refresh()
        assert (r.reports["visit"], r.bad_lines) == (14, 0)
        with g1[1].open("ab") as f:
            f.write(lines[14][half:] + b"".join(lines[15:]))
        r = store.refresh()
        assert (r.reports["visit"], r.bad_lines) == (len(visits) - 14, 0)
        assert store.summary()["reports"]["visit"] == len(visits)
        assert _positive(views(store)) == _positive(expected_views(tmp_path))


def test_batch_bytes_bounds_each_transaction_also_within_one_file(tmp_path: Path, seed: int) -> None:
    """``--batch-mb``: one large file is folded over several transactions of at most the limit."""
    visits, _ = generate(seed, 4, 2, START)
    lines = [encode_report(v) + b"\n" for v in visits]
    big = segment_path(tmp_path, "visit", LANDED, 0, 0)
    big.parent.mkdir(parents=True)
    big.write_bytes(b"".join(lines))
    segment_path(tmp_path, "visit", LANDED, 0, len(lines)).write_bytes(b"")  # closes it
    limit = 8 * max(map(len, lines))
    folds: list[int] = []
    with RollupStore(tmp_path, None, TOPICS, batch_bytes=limit) as store:
        assert store._fold is not None
        fold = store._fold._fold_batch

        def counting_fold(kind: Any, pieces: list[Any]) -> tuple[int, int]:
            folds.append(sum(p.read_path.stat().st_size for p in pieces))  # the bytes DuckDB reads
            return fold(kind, pieces)

        store._fold._fold_batch = counting_fold  # type: ignore[method-assign]
        r = store.refresh()
        assert r.reports["visit"] == len(visits) and r.bad_lines == 0
        assert len(folds) >= len(b"".join(lines)) // limit
        assert max(folds) <= limit
        assert sum(folds) == big.stat().st_size
        assert _positive(views(store)) == _positive(expected_views(tmp_path))
        # Folded in pieces, compacted into one row set once done.
        assert store.cursor().execute("SELECT pieces FROM files WHERE path = ?", [str(big)]).fetchone() == (1,)


def test_records_landed_from_the_retry_topic_are_counted(tmp_path: Path, seed: int) -> None:
    """Parked records land from ``visit.retry`` into ``visit/`` in files named after the retry
    partition (and nowhere else): the charts count them, and that partition's open file is its own."""
    visits, _ = generate(seed, 2, 1, START)
    lines = [encode_report(v) + b"\n" for v in visits]
    own = segment_path(tmp_path, "visit", LANDED, 0, 0)
    own.parent.mkdir(parents=True)
    own.write_bytes(b"".join(lines[:10]))
    retry = own.with_name(segment_name("visit.retry", 0, 0))
    retry.write_bytes(b"".join(lines[10:]))

    segments = {s.path: s for s in list_segments(tmp_path, TOPICS)}
    assert set(segments) == {own, retry}
    assert (segments[retry].topic, segments[retry].kind, segments[retry].closed) == ("visit.retry", "visit", False)
    assert segments[own].closed is False  # visit[0]'s newest file, not closed by visit.retry[0]'s
    with RollupStore(tmp_path, None, TOPICS) as store:
        store.refresh()
        assert store.summary()["reports"]["visit"] == len(visits)
        assert _positive(views(store)) == _positive(expected_views(tmp_path))
