"""Turn a folder of JSONL files into an ordinary TFDS dataset, without TensorFlow.

Each `SPLIT.jsonl` in the folder (`train.jsonl`, `test.jsonl`, ...) becomes the
split SPLIT, stored as array_record in `data_dir/NAME/VERSION/` with the rows in
file order. Read it back with `TfdsSource(NAME, "train", data_dir=...)` or
`tfds.data_source(NAME, split="train", data_dir=...)`.

    python -m monitor_jax.data.tfds_jsonl --src DIR --name NAME --data_dir DIR \\
        --features id:text,text:text,label:int64,messages:messages

Feature kinds: text, int64, int32, float32, float64, bool, and messages (a chat:
a list of {"role": str, "content": str}, stored as a TFDS Sequence of the two
text features). Every schema field is required in every row and must have
exactly its kind (TFDS itself would turn 1.5 into 1 and "3" into 3); fields not
in the schema are not stored. Rows are checked with their file and line in the
error message.

TFDS without TensorFlow: the builder is plain Python, so nothing here imports
TensorFlow. TFDS 4.9 ships with GCS access disabled; we also pass
`try_download_gcs=False` so a build never looks for prepared copies online, and
readers pass `download=False` so a missing dataset is an error, not a download.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import types
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from monitor_jax.data.sources import DataError, JsonlSource


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_messages(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(m, dict) and set(m) == {"role", "content"} and all(isinstance(s, str) for s in m.values())
        for m in v)


def _messages_feature():
    return tfds.features.Sequence({"role": tfds.features.Text(), "content": tfds.features.Text()})


# kind -> (TFDS feature, check of a JSON value, what the check expects)
FEATURE_KINDS: dict[str, tuple[Any, Any, str]] = {
    "text": (tfds.features.Text, lambda v: isinstance(v, str), "a string"),
    "int64": (lambda: np.int64, _is_int, "an integer"),
    "int32": (lambda: np.int32, _is_int, "an integer"),
    "float32": (lambda: np.float32, _is_number, "a number"),
    "float64": (lambda: np.float64, _is_number, "a number"),
    "bool": (lambda: np.bool_, lambda v: isinstance(v, bool), "true or false"),
    "messages": (_messages_feature, _is_messages, 'a list of {"role": string, "content": string}'),
}


def parse_features(spec: str) -> dict[str, str]:
    """'text:text,label:int64' -> {'text': 'text', 'label': 'int64'}."""
    features = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, kind = (s.strip() for s in item.partition(":"))
        if not sep or not name or not kind:
            raise DataError(f"feature {item!r} in {spec!r} is not NAME:KIND")
        features[name] = kind
    return features


def _check_schema(features: Mapping[str, str]) -> None:
    if not features:
        raise DataError("the feature schema is empty; give NAME:KIND pairs, e.g. text:text,label:int64")
    unknown = {name: kind for name, kind in features.items() if kind not in FEATURE_KINDS}
    if unknown:
        raise DataError(f"unknown feature kinds {unknown}; choose from {sorted(FEATURE_KINDS)}")


class _JsonlBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Splits from SPLIT.jsonl files under a schema; `build_tfds_from_jsonl` subclasses it per dataset."""

    src_dir: str
    schema: dict[str, str]
    # TFDS looks for a checksums file next to the builder's code; we download nothing, and for a builder
    # inside a package TFDS 4.9.10 computes that path with `importlib_resources`, which it does not
    # install on Python >= 3.9 (ModuleNotFoundError). None means "no checksums file".
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Built by monitor_jax.data.tfds_jsonl from {self.src_dir}",
            features=tfds.features.FeaturesDict({k: FEATURE_KINDS[v][0]() for k, v in self.schema.items()}),
            # Rows keep their file order: the writer sorts by our integer keys instead of hashing them.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(path) for split, path in _split_files(self.src_dir).items()}

    def _generate_examples(self, path):
        yield from enumerate(_checked_rows(path, self.schema))


def _checked_rows(path: str, schema: Mapping[str, str]):
    """The rows of a JSONL file projected onto `schema`, each field checked against its kind."""
    source = JsonlSource(path, required=list(schema))
    for i in range(len(source)):
        row = source[i]
        for name, kind in schema.items():
            _, check, expected = FEATURE_KINDS[kind]
            if not check(row[name]):
                raise DataError(f"{source.describe(i)}: field {name!r} is declared {kind} and must be "
                                f"{expected}, got {row[name]!r:.200}")
        yield {name: row[name] for name in schema}


def _split_files(src_dir: str) -> dict[str, str]:
    """split name -> path, one per SPLIT.jsonl in src_dir."""
    splits = {name[:-len(".jsonl")]: os.path.join(src_dir, name)
              for name in sorted(os.listdir(src_dir)) if name.endswith(".jsonl")}
    if not splits:
        raise DataError(f"no SPLIT.jsonl files (train.jsonl, test.jsonl, ...) in {src_dir}; "
                        f"found {sorted(os.listdir(src_dir))}")
    bad = [s for s in splits if not re.fullmatch(r"\w+", s)]
    if bad:
        raise DataError(f"split names {bad} (from file names in {src_dir}) may hold only letters, digits and _")
    return splits


def build_tfds_from_jsonl(src_dir: str | os.PathLike, name: str, data_dir: str | os.PathLike,
                          features: Mapping[str, str], version: str = "1.0.0", overwrite: bool = False) -> None:
    """Build TFDS dataset `name` (array_record) in `data_dir` from `src_dir/SPLIT.jsonl` files.

    `features` maps field name -> kind (see FEATURE_KINDS). A version that already
    exists is an error unless `overwrite`, so stale data is never read by mistake.
    """
    src_dir, data_dir = os.fspath(src_dir), os.fspath(data_dir)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise DataError(f"dataset name {name!r} must be snake_case (a-z, 0-9, _), starting with a letter")
    if not os.path.isdir(src_dir):
        raise DataError(f"no such folder: {src_dir}")
    _check_schema(features)
    try:
        tfds_version = tfds.core.Version(version)
    except ValueError as e:
        raise DataError(f"version {version!r}: {e}") from e
    target = os.path.join(data_dir, name, version)
    if os.path.exists(target) and not overwrite:
        raise DataError(f"{target} already exists; pass overwrite=True (--overwrite) or a new version")
    # Check every row before TFDS starts: a bad row then fails before anything in data_dir changes
    # (with overwrite, TFDS deletes the old version first). The cost is a second parse of the files.
    for path in _split_files(src_dir).values():
        for _ in _checked_rows(path, features):
            pass

    # TFDS builders are classes whose `name` and `VERSION` are class attributes, so each dataset gets its
    # own subclass. `name` must be in the class body: otherwise TFDS infers it from the class and module
    # names, which fails under `python -m`. skip_registration keeps the class out of TFDS's global registry,
    # so a notebook can rebuild the same name, and readers always load the dataset from its files.
    attributes = dict(name=name, VERSION=tfds_version, src_dir=src_dir, schema=dict(features))
    builder_cls = types.new_class("JsonlDataset", (_JsonlBuilder,), {"skip_registration": True},
                                  lambda namespace: namespace.update(attributes))
    # Always regenerate (an existing version was refused above unless overwrite). Nothing is downloaded;
    # a throwaway download_dir keeps TFDS from leaving an empty data_dir/downloads behind.
    config = tfds.download.DownloadConfig(try_download_gcs=False,
                                          download_mode=tfds.download.GenerateMode.FORCE_REDOWNLOAD)
    with tempfile.TemporaryDirectory() as download_dir:
        builder_cls(data_dir=data_dir, file_format="array_record").download_and_prepare(
            download_dir=download_dir, download_config=config)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="folder with SPLIT.jsonl files")
    parser.add_argument("--name", required=True, help="dataset name (snake_case)")
    parser.add_argument("--data_dir", required=True, help="TFDS data_dir to write into")
    parser.add_argument("--features", required=True, help="NAME:KIND,... with KIND in " + ", ".join(FEATURE_KINDS))
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing build of this version")
    args = parser.parse_args(argv)
    try:
        build_tfds_from_jsonl(args.src, args.name, args.data_dir, parse_features(args.features),
                              version=args.version, overwrite=args.overwrite)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"built {os.path.join(args.data_dir, args.name, args.version)}")


if __name__ == "__main__":
    main()
