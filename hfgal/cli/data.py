"""`hfgal data download | build | synthetic`: Galaxy10_DECals.h5 from Zenodo, and GZ10 sources -> dataset folders
with card and split summary, optionally pushed."""

from __future__ import annotations

from ..constants import DEFAULT_SEPARATION_ARCSEC
from ..data.split import SCHEMES, SPLITS


def _counts(gz10) -> str:
    return ", ".join(f"{s}: {len(gz10[s])}" for s in SPLITS)


def _build(args) -> int:
    from ..data.save import build_dataset

    if args.push_to:
        from ..hub.access import check_push_access

        check_push_access(args.push_to)  # fail before hours of work, not after
    gz10 = build_dataset(
        args.out,
        h5=args.h5,
        source=args.source,
        seed=args.seed,
        split_scheme=args.split_scheme,
        separation_arcsec=args.separation_arcsec,
        repo_id=args.push_to,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out} ({_counts(gz10)})")
    if args.push_to:
        from ..hub.push import push_dataset

        print(f"pushed to {push_dataset(args.out, args.push_to, private=args.private or None)}")
    return 0


def _download(args) -> int:
    from ..data.download import download_gz10

    path = download_gz10(args.dir, force=args.force)
    print(f"{path} ({path.stat().st_size:,} bytes, checksum verified)")
    source = path if args.dir else "zenodo"  # load_gz10("zenodo") looks in hfgal's cache, not in --dir
    print(f"next: hfgal data build --source {source} --out gz10, or train with --dataset {source}")
    return 0


def _synthetic(args) -> int:
    from ..data.save import build_synthetic

    gz10 = build_synthetic(
        args.out,
        n=args.n,
        seed=args.seed,
        proportions=args.proportions,
        split_scheme=args.split_scheme,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out} ({_counts(gz10)})")
    return 0


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="get and build GZ10 datasets (Zenodo h5 -> Hugging Face Dataset)")
    sub = data.add_subparsers(dest="data_command", metavar="{download,build,synthetic}", required=True)

    download = sub.add_parser(
        "download",
        help="Galaxy10_DECals.h5 from Zenodo record 10845026 into hfgal's cache (resumable, checksum-verified)",
    )
    download.add_argument(
        "--dir", help="folder to put it in (default: $HFGAL_CACHE/downloads/zenodo-10845026, $HF_HOME/hfgal/...)"
    )
    download.add_argument("--force", action="store_true", help="download again even if the file is there")
    download.set_defaults(func=_download)

    build = sub.add_parser("build", help="Galaxy10_DECals.h5 -> DatasetDict folder + card (optionally pushed)")
    build.add_argument("--h5", help="path of Galaxy10_DECals.h5")
    build.add_argument("--source", help="any load_gz10 source instead of --h5 (zenodo, folder, Hub id, synthetic:N)")
    build.add_argument("--out", required=True, help="output folder (written atomically)")
    build.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    build.add_argument(
        "--split-scheme",
        choices=sorted(SCHEMES),
        help="default: 80/10/10 keeping sky neighbours together; poster: 90/10 random (default: the source's honest "
        "split: default where it has coordinates, its published split for Hub ids and saved folders)",
    )
    build.add_argument(
        "--separation-arcsec",
        type=float,
        help=f"linking radius of the default split (default {DEFAULT_SEPARATION_ARCSEC:.3f}, the cutout width)",
    )
    build.add_argument("--push-to", metavar="REPO_ID", help="also push dataset + card to this Hub dataset repo")
    build.add_argument("--private", action="store_true", help="create the Hub repo private")
    build.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    build.set_defaults(func=_build)

    synth = sub.add_parser("synthetic", help="generate GZ10-like synthetic galaxies (the offline default)")
    synth.add_argument("--n", type=int, default=2000, help="number of galaxies (default 2000)")
    synth.add_argument("--out", required=True, help="output folder (written atomically)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--proportions", choices=["gz10", "balanced"], default="gz10")
    synth.add_argument("--split-scheme", choices=sorted(SCHEMES), help="default (the default) or poster")
    synth.add_argument("--overwrite", action="store_true")
    synth.set_defaults(func=_synthetic)
