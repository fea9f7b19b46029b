"""The example pipeline: scikit-learn's bundled handwritten digits as typed datasets.

``digits_raw`` (1,797 8x8 images) -> ``digits_split`` (static partitions ``train`` /
``test``, a deterministic 80/20 split) -> ``digits_features`` (normalized float32
feature vectors, marked for promotion) -> ``digits_classifier`` (a scikit-learn model
trained on the ``train`` partition, recording the dataset CID it was trained on). Every dataset has checksum, sample-count and
schema checks. The promotion sensor and a nightly schedule are defined but STOPPED;
they publish only when an atmosphere account is configured through the environment
(``ATDATA_HANDLE``, ``ATDATA_APP_PASSWORD``, optional ``ATDATA_SERVICE_URL``).

Index and shards live under ``ATDATA_EXAMPLE_HOME`` (default ``.demo/`` in the
repository): ``index.db`` and ``data/``. For the scale-out shape (docs/scale-out.md) the
environment moves them off the machine, with no code change:

- ``ATDATA_INDEX_DSN``: a PostgreSQL DSN; the index lives there instead of ``index.db``.
- ``ATDATA_S3_BUCKET`` (plus optional ``ATDATA_S3_ENDPOINT_URL``, ``ATDATA_S3_PREFIX``,
  ``ATDATA_S3_REGION``): shards go to that bucket instead of ``data/``. Credentials are
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), read at run
  time through ``dg.EnvVar``; unset, boto3's default chain (instance role, ...) applies.
"""


import hashlib
import os
import pickle
from pathlib import Path

import dagster as dg
import numpy as np
from numpy.typing import NDArray

from atdata_dagster import (
    AtdataIndexResource,
    AtdataIOManager,
    Dataset,
    LocalDiskStoreConfig,
    S3DataStoreConfig,
    build_dataset_checks,
    build_promotion_job,
    build_promotion_schedule,
    build_promotion_sensor,
    packable,
    validate_definitions,
)
from atdata_dagster.errors import ConfigurationError

HOME = Path(os.environ.get("ATDATA_EXAMPLE_HOME", Path(__file__).resolve().parent.parent / ".demo"))
SPLITS = dg.StaticPartitionsDefinition(["train", "test"])


@packable
class Digit:
    """One 8x8 grey-scale handwritten digit (pixel values 0..16) and its label."""

    image: NDArray[np.uint8]
    label: int
    source_index: int


@packable
class DigitFeatures:
    """A digit as a normalized 64-dim feature vector (pixels / 16) and its label."""

    features: NDArray[np.float32]
    label: int
    source_index: int


def _split_of(i: int) -> str:
    # deterministic and stable across runs: hash of the source index, 80/20
    return "test" if hashlib.sha256(str(i).encode()).digest()[0] < 52 else "train"


@dg.asset(group_name="digits", kinds={"webdataset"}, code_version="1", metadata={"atdata/maxcount": 500})
def digits_raw(context: dg.AssetExecutionContext):
    """The 1,797 images of scikit-learn's bundled digits dataset, as typed samples."""
    from sklearn.datasets import load_digits

    data = load_digits()
    context.log.info(f"loaded {len(data.images)} digits from scikit-learn")
    return dg.Output(
        Digit(image=img.astype(np.uint8), label=int(y), source_index=i)
        for i, (img, y) in enumerate(zip(data.images, data.target))
    )


@dg.asset(group_name="digits", kinds={"webdataset"}, code_version="1", partitions_def=SPLITS)
def digits_split(context: dg.AssetExecutionContext, digits_raw: Dataset[Digit]):
    """A deterministic 80/20 train/test split of ``digits_raw``, one partition per split."""
    split = context.partition_key
    return dg.Output(d for d in digits_raw.ordered() if _split_of(d.source_index) == split)


@dg.asset(
    group_name="digits",
    kinds={"webdataset"},
    code_version="1",
    partitions_def=SPLITS,
    metadata={"atdata/promote": True, "atdata/manifest": True},
)
def digits_features(digits_split: Dataset[Digit]):
    """Normalized features (pixels / 16 as float32[64]) per split; marked for promotion."""
    return dg.Output(
        DigitFeatures(features=(d.image.reshape(-1) / 16.0).astype(np.float32), label=d.label,
                      source_index=d.source_index)
        for d in digits_split.ordered()
    )


@dg.asset(
    group_name="digits",
    kinds={"scikitlearn"},
    code_version="1",
    ins={"digits_features": dg.AssetIn(partition_mapping=dg.SpecificPartitionsPartitionMapping(["train"]))},
)
def digits_classifier(
    context: dg.AssetExecutionContext, digits_features: Dataset[DigitFeatures], atdata_index: AtdataIndexResource
) -> dg.MaterializeResult:
    """A linear classifier trained on ``digits_features[train]``; records the dataset CIDs it used.

    Streams shuffled mini-batches (a new order per epoch, only the two fields it needs
    decoded) into ``SGDClassifier.partial_fit``, scores it on ``digits_features[test]``
    and stores the model under ``models/``. ``atdata/trained_on`` names the exact
    dataset version, so the asset page shows model <- dataset@CID.
    """
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(loss="log_loss", random_state=0)
    classes = np.arange(10)
    for epoch in range(5):
        for batch in digits_features.shuffled(batch_size=128, seed=epoch, fields=["features", "label"]):
            model.partial_fit(batch.features, np.asarray(batch.label), classes=classes)
    idx = atdata_index.build_index()
    try:
        test_entry = idx.get_dataset("digits_features/partition=test")
        test = idx.dataset_for_entry(test_entry, DigitFeatures)
        x, y = [], []
        for batch in test.ordered(batch_size=512, fields=["features", "label"]):
            x.append(batch.features)
            y.extend(batch.label)
        accuracy = float(model.score(np.concatenate(x), np.asarray(y)))
    finally:
        idx.close()
    path = HOME / "models" / "digits_classifier.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(model))
    context.log.info(f"trained on {len(digits_features)} samples of {digits_features.cid}: test accuracy {accuracy:.3f}")
    return dg.MaterializeResult(metadata={
        "atdata/trained_on": digits_features.cid,
        "atdata/evaluated_on": test_entry.cid,
        "train_samples": len(digits_features),
        "test_accuracy": accuracy,
        "model_path": dg.MetadataValue.path(str(path)),
    })


def _atmosphere_settings() -> dict:
    if os.environ.get("ATDATA_HANDLE"):
        return {
            "atmosphere_handle": os.environ["ATDATA_HANDLE"],
            "atmosphere_password": dg.EnvVar("ATDATA_APP_PASSWORD"),
            "atmosphere_service_url": os.environ.get("ATDATA_SERVICE_URL", "https://bsky.social"),
        }
    return {"atmosphere": False}


def _index_settings(environ=os.environ) -> dict:
    dsn = environ.get("ATDATA_INDEX_DSN")
    if not dsn:
        return {"path": str(HOME / "index.db")}
    scheme = dsn.split("://", 1)[0] if "://" in dsn else ""
    if not scheme.lower().startswith("postgres"):
        # name the scheme only: the DSN may hold a password
        raise ConfigurationError(
            f"ATDATA_INDEX_DSN must be a PostgreSQL DSN (postgresql://user:password@host:5432/db); "
            f"got {'scheme ' + repr(scheme) if scheme else 'a value without a scheme'}. "
            "Unset it to keep the index in SQLite under ATDATA_EXAMPLE_HOME."
        )
    # resolved at run time, shown by name (never by value) in the UI
    return {"dsn": dg.EnvVar("ATDATA_INDEX_DSN")}


_S3_OPTIONS = ("ATDATA_S3_ENDPOINT_URL", "ATDATA_S3_PREFIX", "ATDATA_S3_REGION")
_S3_SECRETS = (("aws_access_key_id", "AWS_ACCESS_KEY_ID"), ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
               ("aws_session_token", "AWS_SESSION_TOKEN"))


def _data_store(environ=os.environ):
    bucket = environ.get("ATDATA_S3_BUCKET")
    if not bucket:
        stray = [v for v in _S3_OPTIONS if environ.get(v)]
        if stray:  # without this, shards would silently land on the local disk
            raise ConfigurationError(
                f"{', '.join(stray)} set but ATDATA_S3_BUCKET is not: set ATDATA_S3_BUCKET to write "
                "shards to S3, or unset them to keep shards on local disk under ATDATA_EXAMPLE_HOME."
            )
        return LocalDiskStoreConfig(root=str(HOME / "data"))
    if bool(environ.get("AWS_ACCESS_KEY_ID")) != bool(environ.get("AWS_SECRET_ACCESS_KEY")):
        have, missing = (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if environ.get("AWS_ACCESS_KEY_ID")
                         else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"))
        raise ConfigurationError(
            f"{have} is set but {missing} is not: set both, or neither to use boto3's default "
            "credential chain (instance profile, IRSA, ~/.aws)."
        )
    # credentials are resolved at run time in the worker; unset, boto3's default chain applies
    secrets = {field: dg.EnvVar(var) for field, var in _S3_SECRETS if environ.get(var)}
    return S3DataStoreConfig(
        bucket=bucket,
        endpoint_url=environ.get("ATDATA_S3_ENDPOINT_URL") or None,
        region_name=environ.get("ATDATA_S3_REGION") or None,
        prefix=environ.get("ATDATA_S3_PREFIX", ""),
        **secrets,
    )


index = AtdataIndexResource(
    **_index_settings(),
    data_store=_data_store(),
    **_atmosphere_settings(),
)

all_assets = [digits_raw, digits_split, digits_features]
# the checksum check blocks: a run that materializes a dataset whose shards fail it stops
# before any downstream asset reads them; sample count and schema only report
checks = [
    c for a in all_assets
    for c in build_dataset_checks(a, checks=["checksums"], blocking=True)
    + build_dataset_checks(a, checks=["sample_count", "schema"])
]
promotion_job = build_promotion_job()

# validate_definitions: a typo in an asset's atdata/* metadata or an unknown repository
# stops the code location from loading, instead of failing the first run
defs = validate_definitions(dg.Definitions(
    assets=dg.with_source_code_references([*all_assets, digits_classifier]),  # "Open source" links in the UI
    asset_checks=checks,
    jobs=[promotion_job],
    sensors=[build_promotion_sensor(promotion_job)],
    schedules=[build_promotion_schedule("0 3 * * *", promotion_job)],
    resources={"io_manager": AtdataIOManager(index=index), "atdata_index": index},
))
