"""Embedded search at catalog scale: build a Tantivy index of N demo products, then time
``TantivySearchIndex.search`` in-process over a deterministic query mix.

    .venv/bin/python -m benchmarks.search --products 1000000 \\
        --index-dir var-bench/search-1m --results-md benchmarks/RESULTS.md

The index directory must not be inside a committed directory (``var*/`` is ignored by
git). ``--reuse`` skips the build when the directory already holds an index.

Query classes (each query is timed alone, sequentially; then the whole mix again with
concurrent clients):

- ``term``: one or two words from the catalog ("kettle", "black speaker");
- ``typo``: a catalog word with one deliberate edit ("kettel", "hedphones");
- ``term+filters``: a word plus category / brand / price range / attribute filters;
- ``facets``: broad queries (a top-level category, a common material or colour) with
  facet counts;
- ``browse-price``: no text, a category sorted by price (either direction);
- ``deep-cursor``: page 10 to 50 of a browse or text query, reached by following cursors
  (the earlier pages are fetched untimed).

Every class but ``facets`` asks for no facets, so each measures one thing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.cart_add import machine_info, replace_section
from benchmarks.openloop import percentiles
from storage.demo import DemoItem, generate
from storage.records import SearchDoc, SearchQuery, SortOrder
from storage.search.documents import search_doc
from storage.search.tantivy_index import TantivySearchIndex

SECTION_TEMPLATE = "## Search at {n} products"
TARGET_P95_S = 0.050
CLASSES = ("term", "typo", "term+filters", "facets", "browse-price", "deep-cursor")
_BATCH = 10_000
_SAMPLE = 5_000  # products the query vocabulary is drawn from
_PAGE = 20


# --------------------------------------------------------------------------- building


def search_docs(items: Sequence[DemoItem]) -> list[SearchDoc]:
    docs = []
    for item in items:
        doc = search_doc(item.product, {p.sku: p.amount for p in item.prices})
        if doc is not None:
            docs.append(doc)
    return docs


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def build(index: TantivySearchIndex, products: int, seed: int) -> dict[str, float]:
    started = time.perf_counter()
    await index.ensure_index()
    await index.clear()
    items = generate(products, seed=seed)
    indexed = 0
    with tqdm(total=products, unit="products", desc="indexing") as bar:
        while chunk := list(islice(items, _BATCH)):
            indexed += await index.upsert(search_docs(chunk))
            bar.update(len(chunk))
    committing = time.perf_counter()
    await index.refresh()
    done = time.perf_counter()
    return {
        "indexed": indexed,
        "build_s": done - started,
        "commit_s": done - committing,
    }


# --------------------------------------------------------------------------- the query mix


@dataclass(frozen=True, slots=True)
class Case:
    kind: str
    query: SearchQuery
    pages_before: int = 0  # deep-cursor: cursors followed (untimed) before the timed page


@dataclass(frozen=True, slots=True)
class Vocabulary:
    nouns: tuple[str, ...]
    words: tuple[str, ...]
    colors: tuple[str, ...]
    brands: tuple[str, ...]
    leaves: tuple[str, ...]
    tops: tuple[str, ...]
    mids: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]


def vocabulary(seed: int) -> Vocabulary:
    """Words, brands, categories and attributes of the first products of the catalog."""
    nouns: set[str] = set()
    words: set[str] = set()
    colors: set[str] = set()
    brands: set[str] = set()
    leaves: set[str] = set()
    attributes: set[tuple[str, str]] = set()
    for doc in search_docs(list(generate(_SAMPLE, seed=seed))):
        brands.add(doc.brand)
        leaves.add(doc.category)
        # Titles are "<Adjective> <Brand> <Noun...>": the noun is what follows the brand.
        noun = doc.title.split(doc.brand, 1)[-1].strip().lower()
        nouns.add(noun)
        words.update(w for w in noun.split() if len(w) >= 4)
        for name, value in doc.attributes:
            if name == "color":
                colors.add(value)
            if name != "size":
                attributes.add((name, value))
    tops = {leaf.split("/")[0] for leaf in leaves}
    mids = {"/".join(leaf.split("/")[:2]) for leaf in leaves}
    return Vocabulary(
        nouns=tuple(sorted(nouns)),
        words=tuple(sorted(words)),
        colors=tuple(sorted(colors)),
        brands=tuple(sorted(brands)),
        leaves=tuple(sorted(leaves)),
        tops=tuple(sorted(tops)),
        mids=tuple(sorted(mids)),
        attributes=tuple(sorted(attributes)),
    )


def misspell(word: str, rng: random.Random) -> str:
    """One edit (drop, swap, replace or add a letter) away from ``word``, not at its start."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    at = rng.randrange(1, len(word) - 1)
    edit = rng.randrange(4)
    if edit == 0:
        return word[:at] + word[at + 1 :]
    if edit == 1:
        return word[:at] + word[at + 1] + word[at] + word[at + 2 :]
    if edit == 2:
        return word[:at] + rng.choice(letters.replace(word[at], "")) + word[at + 1 :]
    return word[:at] + rng.choice(letters) + word[at:]


def cases(vocab: Vocabulary, per_class: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    out: list[Case] = []
    long_words = [w for w in vocab.words if len(w) >= 5]
    for _ in range(per_class):
        noun = rng.choice(vocab.nouns)
        text = f"{rng.choice(vocab.colors)} {noun}" if rng.random() < 0.3 else noun
        out.append(Case("term", SearchQuery(text=text, facets=False)))

        out.append(
            Case("typo", SearchQuery(text=misspell(rng.choice(long_words), rng), facets=False))
        )

        leaf = rng.choice(vocab.leaves)
        filtered = SearchQuery(
            text=rng.choice(vocab.nouns),
            category=rng.choice([leaf, leaf.rsplit("/", 1)[0]]),
            facets=False,
        )
        extra = rng.randrange(4)
        if extra == 0:
            filtered = replace(filtered, brands=tuple(sorted(rng.sample(vocab.brands, 2))))
        elif extra == 1:
            low = rng.randrange(0, 30_000, 100)
            filtered = replace(filtered, min_price=low, max_price=low + rng.choice((2000, 10000)))
        elif extra == 2:
            name, value = rng.choice(vocab.attributes)
            filtered = replace(filtered, attributes=((name, (value,)),))
        else:
            filtered = replace(
                filtered,
                brands=(rng.choice(vocab.brands),),
                attributes=(("color", (rng.choice(vocab.colors),)),),
                max_price=rng.randrange(5_000, 60_000, 100),
            )
        out.append(Case("term+filters", filtered))

        broad = rng.randrange(3)
        if broad == 0:
            facet_query = SearchQuery(category=rng.choice(vocab.tops))
        elif broad == 1:
            facet_query = SearchQuery(text=rng.choice(("steel", "cotton", "leather", "plastic")))
        else:
            facet_query = SearchQuery(text=rng.choice(vocab.colors))
        out.append(Case("facets", facet_query))

        out.append(
            Case(
                "browse-price",
                SearchQuery(
                    category=rng.choice(vocab.leaves + vocab.mids),
                    sort=rng.choice((SortOrder.PRICE_ASC, SortOrder.PRICE_DESC)),
                    facets=False,
                ),
            )
        )

        deep = rng.randrange(3)
        if deep == 0:
            deep_query = SearchQuery(
                category=rng.choice(vocab.mids), sort=SortOrder.PRICE_ASC, facets=False
            )
        elif deep == 1:
            deep_query = SearchQuery(sort=SortOrder.NEWEST, facets=False)
        else:
            deep_query = SearchQuery(text=rng.choice(vocab.nouns), facets=False)
        out.append(Case("deep-cursor", deep_query, pages_before=rng.choice((9, 24, 49))))
    return out


async def prepare(index: TantivySearchIndex, case: Case) -> SearchQuery | None:
    """The query to time: for deep pages, the one carrying the cursor of that page."""
    query = case.query
    for _ in range(case.pages_before):
        result = await index.search(query)
        if result.next_cursor is None:
            return None
        query = replace(query, cursor=result.next_cursor)
    return query


# --------------------------------------------------------------------------- timing


def summary(samples: Sequence[float]) -> dict[str, float]:
    p50, p95, p99 = percentiles(samples, (50, 95, 99))
    return {"n": len(samples), "p50_s": p50, "p95_s": p95, "p99_s": p99, "max_s": max(samples)}


async def timed(index: TantivySearchIndex, query: SearchQuery) -> tuple[float, int]:
    started = time.perf_counter()
    result = await index.search(query)
    return time.perf_counter() - started, result.total


async def run_sequential(
    index: TantivySearchIndex, prepared: list[tuple[str, SearchQuery]]
) -> dict[str, list[float]]:
    by_class: dict[str, list[float]] = {kind: [] for kind in CLASSES}
    for kind, query in tqdm(prepared, desc="timing", unit="queries"):
        seconds, _ = await timed(index, query)
        by_class[kind].append(seconds)
    return by_class


async def run_concurrent(
    index: TantivySearchIndex, prepared: list[tuple[str, SearchQuery]], clients: int
) -> tuple[list[float], float]:
    queue: asyncio.Queue[SearchQuery] = asyncio.Queue()
    for _, query in prepared:
        queue.put_nowait(query)
    samples: list[float] = []

    async def client() -> None:
        while not queue.empty():
            seconds, _ = await timed(index, queue.get_nowait())
            samples.append(seconds)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return samples, time.perf_counter() - started


def rows(by_class: dict[str, dict[str, float]]) -> list[str]:
    out = [
        "| query class | queries | P50 ms | P95 ms | P99 ms | max ms | P95 ≤ 50 ms |",
        "|:---|---:|---:|---:|---:|---:|:---|",
    ]
    for kind, s in by_class.items():
        out.append(
            f"| {kind} | {s['n']} | {s['p50_s'] * 1000:.1f} | {s['p95_s'] * 1000:.1f} "
            f"| {s['p99_s'] * 1000:.1f} | {s['max_s'] * 1000:.1f} "
            f"| {'yes' if s['p95_s'] <= TARGET_P95_S else 'NO'} |"
        )
    return out


def markdown_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    b = report["build"]
    cfg = report["config"]
    heading = SECTION_TEMPLATE.format(n=f"{cfg['products']:,}")
    seq = {**report["sequential"], "overall": report["sequential_overall"]}
    lines = [
        heading,
        "",
        f"`TantivySearchIndex.search` called in-process (no HTTP), over an index of "
        f"{b['indexed']:,} published products (of {cfg['products']:,} generated by "
        f"`storage.demo.generate`, seed {cfg['seed']}). {cfg['per_class']} queries per class "
        f"from a fixed mix (see `benchmarks/search.py`), {cfg['limit']} hits per page, after "
        f"{cfg['warmup']} warm-up queries. Target: P95 ≤ 50 ms per class.",
        "",
        "Build: "
        + (
            "reused an existing index."
            if b.get("reused")
            else f"{b['build_s']:.0f} s (generating the catalog, indexing with a "
            f"{cfg['heap_mb']} MB writer heap, and the final commit of {b['commit_s']:.1f} s)"
            f"; merges settled {b['merge_s']:.1f} s later."
        )
        + f" Index on disk: {b['size_bytes'] / 2**20:,.0f} MiB in {b['segments']} segments.",
        "",
        "Classes: *term* one or two catalog words; *typo* a catalog word with one edit; "
        "*term+filters* a word plus category and brand, price-range or attribute filters; "
        "*facets* a broad query (a top-level category, a material or a colour) with facet "
        "counts; *browse-price* a category sorted by price; *deep-cursor* page 10, 25 or 50 "
        "of a category by price, of everything by newest, or of a word by relevance, "
        "reached through cursors. Only *facets* asks for facet counts.",
        "",
        "Sequential, one query at a time:",
        "",
        *rows(seq),
        "",
        f"{cfg['clients']} concurrent clients, the same mix: "
        f"{report['concurrent']['qps']:.0f} queries/s, "
        f"P50 {report['concurrent']['p50_s'] * 1000:.1f} ms, "
        f"P95 {report['concurrent']['p95_s'] * 1000:.1f} ms, "
        f"P99 {report['concurrent']['p99_s'] * 1000:.1f} ms "
        f"(sequential: {report['sequential_qps']:.0f} queries/s).",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']:g} GiB RAM.",
        f"- Python {m['python']}, tantivy {report['tantivy']}.",
        f"- Date: {report['date']}.",
        "",
        "Reproduce from the repository root:",
        "",
        "```",
        report["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument(
        "--index-dir", type=Path, help="default: var-bench/search-<products> (git-ignored)"
    )
    parser.add_argument("--queries", type=int, default=200, help="queries per class")
    parser.add_argument("--reuse", action="store_true", help="keep an existing index")
    parser.add_argument("--seed", type=int, default=7, help="catalog seed")
    parser.add_argument("--query-seed", type=int, default=11)
    parser.add_argument("--limit", type=int, default=_PAGE, help="hits per page")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients (0: skip)")
    parser.add_argument("--heap-mb", type=int, default=256, help="writer heap")
    parser.add_argument("--search-threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/search.json"))
    parser.add_argument("--results-md", type=Path)
    return parser


def _segments(path: Path) -> int:
    meta = path / "meta.json"
    if not meta.exists():
        return 0
    return len(json.loads(meta.read_text()).get("segments", []))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    index_dir: Path = args.index_dir or Path(f"var-bench/search-{args.products}")
    build_report: dict[str, Any]
    if args.reuse and (index_dir / "meta.json").exists():
        build_report = {"reused": True}
    else:
        writer = TantivySearchIndex(str(index_dir), writer_heap_bytes=args.heap_mb * 2**20)
        build_report = await build(writer, args.products, args.seed)
        settling = time.perf_counter()
        await writer.close()  # waits for the merges the build started
        build_report["merge_s"] = time.perf_counter() - settling
    index = TantivySearchIndex(str(index_dir), search_threads=args.search_threads)
    await index.ensure_index()
    build_report["indexed"] = await index.count()
    build_report["size_bytes"] = directory_bytes(index_dir)
    build_report["segments"] = _segments(index_dir)
    print(
        f"index: {build_report['indexed']:,} products, "
        f"{build_report['size_bytes'] / 2**20:,.0f} MiB, {build_report['segments']} segments"
    )

    vocab = vocabulary(args.seed)
    mix = [
        replace(c, query=replace(c.query, limit=args.limit))
        for c in cases(vocab, args.queries + args.warmup // len(CLASSES) + 1, args.query_seed)
    ]
    prepared: list[tuple[str, SearchQuery]] = []
    for case in tqdm(mix, desc="preparing deep pages", unit="queries"):
        query = await prepare(index, case)
        if query is not None:
            prepared.append((case.kind, query))
    warmup, measured = prepared[: args.warmup], prepared[args.warmup :]
    for _, query in warmup:
        await index.search(query)
    # Equal counts per class: drop the surplus from the end of the mix.
    kept: list[tuple[str, SearchQuery]] = []
    seen: dict[str, int] = dict.fromkeys(CLASSES, 0)
    for kind, query in measured:
        if seen[kind] < args.queries:
            seen[kind] += 1
            kept.append((kind, query))

    started = time.perf_counter()
    by_class = await run_sequential(index, kept)
    sequential_s = time.perf_counter() - started
    every = [s for samples in by_class.values() for s in samples]
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "tantivy": _tantivy_version(),
        "command": _command(),
        "config": {
            "products": args.products,
            "seed": args.seed,
            "per_class": args.queries,
            "limit": args.limit,
            "warmup": len(warmup),
            "clients": args.clients,
            "heap_mb": args.heap_mb,
            "index_dir": str(index_dir),
        },
        "build": build_report,
        "sequential": {k: summary(v) for k, v in by_class.items() if v},
        "sequential_overall": summary(every),
        "sequential_qps": len(every) / sequential_s,
    }
    if args.clients > 0:
        samples, seconds = await run_concurrent(index, kept, args.clients)
        report["concurrent"] = {**summary(samples), "qps": len(samples) / seconds}
    await index.close()
    return report


def _tantivy_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("tantivy")


def _command() -> str:
    return shlex.join([".venv/bin/python", "-m", "benchmarks.search", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.clients < 0 or args.queries < 1 or args.products < 1:
        print("error: --products and --queries must be >= 1, --clients >= 0", file=sys.stderr)
        return 2
    report = asyncio.run(run(args))
    for kind, s in {**report["sequential"], "overall": report["sequential_overall"]}.items():
        print(
            f"{kind:>14}: P50 {s['p50_s'] * 1000:6.1f} ms  P95 {s['p95_s'] * 1000:6.1f} ms  "
            f"P99 {s['p99_s'] * 1000:6.1f} ms  (n={s['n']})"
        )
    if "concurrent" in report:
        c = report["concurrent"]
        print(
            f"{args.clients} clients: {c['qps']:.0f} q/s, P50 {c['p50_s'] * 1000:.1f} ms, "
            f"P95 {c['p95_s'] * 1000:.1f} ms, P99 {c['p99_s'] * 1000:.1f} ms"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if args.results_md is not None:
        doc = args.results_md.read_text() if args.results_md.exists() else "# Benchmark results\n"
        heading = SECTION_TEMPLATE.format(n=f"{args.products:,}")
        args.results_md.write_text(replace_section(doc, heading, markdown_section(report)))
        print(f"updated {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
