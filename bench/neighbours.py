"""The nearest-training-images index: its size, lookup latency and k-NN accuracy.

1. Selection (choices made here, never on the test split): SELECTION training images are held out
   of a temporary index built from the rest, and 1-NN accuracy on them compares cosine with
   Euclidean distance and the images kept per class. The selection images were trained on, like
   every index image: the comparison is between index settings, not an accuracy to report.
2. The shipped index (weights/neighbours.*): file size; median time of one lookup (the query's
   features from the serving network, the search, the looks) and of the search alone.
3. The full Fashion-MNIST test split, read once: k-NN accuracy for k = 1 and 5 (majority vote, ties
   to the nearest) with 95% Wilson intervals, for the shipped index and for all 60,000 training
   images in float32 (what the subset and float16 cost).

    python bench/neighbours.py --dataset ../shared/data/fashion_mnist     # ~3 min on 2 idle cores
    python bench/neighbours.py --latency-only --threads 1                  # the lookup time alone, seconds

Writes <results-dir>/neighbours.json and neighbours.md (default bench/results/).
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402  (puts the repository root on sys.path)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from explain.neighbours import (DEFAULT_K, INDEX_FILE, META_FILE, PER_CLASS, NeighbourIndex,  # noqa: E402
                                balanced_subset, embed, embed_looks)
from model import load_model  # noqa: E402
from modelrepo.ood import as_input, features  # noqa: E402
from training.data import load_images  # noqa: E402
from training.evaluate import wilson_interval  # noqa: E402

SELECTION = 5000


def knn_predict(queries: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, k: int, cosine: bool,
                num_classes: int = 10, chunk: int = 1000) -> torch.Tensor:
    """k-NN labels (B,): majority of the k nearest keys, ties broken by the nearest of the tied classes."""
    out = []
    for i in range(0, len(queries), chunk):
        q = queries[i:i + chunk]
        d = -(q @ keys.T) if cosine else torch.cdist(q, keys)
        idx = d.topk(k, dim=1, largest=False).indices                   # (b, k), nearest first
        votes = F.one_hot(labels[idx], num_classes).float()            # (b, k, C)
        # a vote of 1, plus a tiny bonus that falls with rank: ties go to the class met first
        weights = 1 + 1e-3 * torch.linspace(1, 0, k)
        out.append((votes * weights[None, :, None]).sum(1).argmax(1))
    return torch.cat(out)


def accuracy(pred: torch.Tensor, truth: torch.Tensor) -> dict:
    k, n = int((pred == truth).sum()), len(truth)
    lo, hi = wilson_interval(k, n)
    return {"accuracy": k / n, "ci95": [lo, hi], "n": n}


def selection(raw: torch.Tensor, labels: torch.Tensor) -> dict:
    """1-NN accuracy on SELECTION held-out training images for each index setting; raw: features (N, D)."""
    held = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))[:SELECTION]
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[held] = False
    rest_rows = torch.nonzero(rest).flatten()
    rows = {}
    for per_class in (500, 1000, PER_CLASS):
        keys = rest_rows[balanced_subset(labels[rest_rows], per_class)]
        for metric in ("cosine", "euclidean"):
            cosine = metric == "cosine"
            q, kf = (F.normalize(raw[held], dim=1), F.normalize(raw[keys], dim=1)) if cosine else (raw[held], raw[keys])
            pred = knn_predict(q, kf.half().float(), labels[keys], 1, cosine)
            rows[f"{per_class}/{metric}"] = accuracy(pred, labels[held])["accuracy"]
    return rows


def latency(model, index: NeighbourIndex, look: torch.Tensor) -> dict:
    serving = copy.deepcopy(model).optimize_for_inference_()
    x = as_input(serving, look[None])
    q = embed(serving, x)
    with torch.inference_mode():
        lookup = common.time_calls(lambda: index.search(embed(serving, x), DEFAULT_K), 200, 10)
        search = common.time_calls(lambda: index.search(q, DEFAULT_K), 200, 10)
        distances = common.time_calls(lambda: index.class_distances(q), 200, 10)
    return {"lookup_with_features_ms": lookup, "search_only_ms": search, "class_distances_ms": distances}


def latency_only(cli, model, index: NeighbourIndex) -> int:
    looks, _, _ = load_images(str(common.REPO / "tests" / "data" / "fashion_mnist"), "test")
    timing = latency(model, index, looks[0])
    res = {"info": {"machine": common.machine_info(), "command": common.command_line("bench/neighbours.py")},
           "latency": timing}
    rows = [[name.replace("_ms", "").replace("_", " "), t["median_ms"], t["p95_ms"], t["min_ms"]] for name, t in timing.items()]
    md = f"""# Nearest training images: lookup time for one image

200 calls each after 10 warm-up calls, {res['info']['machine']['torch_threads']} torch thread(s), load average
{', '.join(f'{v:.1f}' for v in res['info']['machine']['load_average_1_5_15min'])} (1, 5, 15 min) on
{res['info']['machine']['cpu_count']} cores. "lookup with features": the query's features from the serving network,
then the search of the {len(index):,} images; "search only": the matrix product and top-k.

{common.md_table(['step', 'median ms', 'p95 ms', 'min ms'], rows)}

```bash
{res['info']['command']}
```
"""
    json_path, md_path = common.write_results(cli.results_dir, "neighbours_latency", res, md)
    print(md)
    print(f"[neighbours] wrote {json_path} and {md_path}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=str(common.REPO.parent / "shared" / "data" / "fashion_mnist"))
    p.add_argument("--model", default=str(common.REPO / "weights"))
    p.add_argument("--results-dir", default=str(common.RESULTS))
    p.add_argument("--latency-only", action="store_true",
                   help="only the lookup time, on a committed test-slice image; writes neighbours_latency.*")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    cli = p.parse_args(argv)
    if cli.threads:
        torch.set_num_threads(cli.threads)
    torch.manual_seed(0)
    model = load_model(cli.model).eval()
    index = NeighbourIndex.load(cli.model, model)
    if cli.latency_only:
        return latency_only(cli, model, index)
    train_looks, train_labels, _ = load_images(cli.dataset, "train")
    test_looks, test_labels, _ = load_images(cli.dataset, "test")
    with torch.no_grad():
        raw = torch.cat([features(model, as_input(model, train_looks[i:i + 500])) for i in range(0, len(train_looks), 500)])
    chosen = selection(raw, train_labels)
    timing = latency(model, index, test_looks[0])
    test_q = embed_looks(model, test_looks)
    all_keys = F.normalize(raw, dim=1)
    test = {}
    for k in (1, 5):
        test[f"shipped k={k}"] = accuracy(knn_predict(test_q, index.features, index.labels, k, True), test_labels)
        test[f"all 60,000 float32 k={k}"] = accuracy(knn_predict(test_q, all_keys, train_labels, k, True), test_labels)
    size = {"index_bytes": (Path(cli.model) / INDEX_FILE).stat().st_size,
            "meta_bytes": (Path(cli.model) / META_FILE).stat().st_size, "images": len(index)}
    res = {"info": {"machine": common.machine_info(), "command": common.command_line("bench/neighbours.py")},
           "selection_1nn": chosen, "selection_images": SELECTION, "latency": timing, "test": test, "size": size}
    md = f"""# Nearest training images: size, lookup latency, k-NN accuracy

Shipped index: {size['images']:,} training images ({PER_CLASS:,} per class, seeded), features in float16, looks as
uint8: `{INDEX_FILE}` {common.mib(size['index_bytes']):.1f} MiB + `{META_FILE}` {size['meta_bytes']:,} bytes.

Selection ({SELECTION:,} training images held out of an index built from the rest; 1-NN accuracy):

{common.md_table(['images per class / distance', '1-NN accuracy'], [[k, f"{v:.2%}"] for k, v in chosen.items()])}

Lookup for one image, median of 200 ({timing['lookup_with_features_ms']['median_ms']:.2f} ms with the query's features from
the serving network; the search alone {timing['search_only_ms']['median_ms']:.2f} ms; per-class distances
{timing['class_distances_ms']['median_ms']:.2f} ms).

Fashion-MNIST test split (10,000 images, read once), k-NN accuracy with 95% Wilson interval:

{common.md_table(['index', 'accuracy', '95% interval'],
                 [[k, f"{v['accuracy']:.2%}", f"{v['ci95'][0]:.2%}-{v['ci95'][1]:.2%}"] for k, v in test.items()])}

```bash
{res['info']['command']}
```
"""
    json_path, md_path = common.write_results(cli.results_dir, "neighbours", res, md)
    print(md)
    print(f"[neighbours] wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
