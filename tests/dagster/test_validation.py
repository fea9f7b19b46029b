"""validate_definitions: a whole Definitions is checked against its atdata IO managers at load.

Plain ``@dg.asset`` metadata, input options and repository names fail when the
definitions load (naming the asset and the fix), not on the first run; nothing is opened.
"""

from __future__ import annotations

import dagster as dg
import pytest

from atdata_dagster import AtdataIndexResource, AtdataIOManager, RepositoryConfig, validate_definitions
from atdata_dagster.errors import ConfigurationError, ConfigurationTypeError


def _asset(metadata=None, key="numbers", io_manager_key="io_manager"):
    @dg.asset(name=key, metadata=metadata or {}, io_manager_key=io_manager_key)
    def _numbers():
        return []

    return _numbers


def _defs(*assets, tmp_path, repos=None, resources=None):
    index = AtdataIndexResource(path=str(tmp_path / "never-created.db"), repos=repos or {})
    return dg.Definitions(assets=list(assets),
                          resources=resources or {"io_manager": AtdataIOManager(index=index)})


def test_valid_definitions_are_returned_unchanged_and_nothing_is_opened(tmp_path):
    defs = _defs(_asset({"atdata/maxcount": 10, "atdata/repo": "local"}), tmp_path=tmp_path)
    assert validate_definitions(defs) is defs
    assert list(tmp_path.iterdir()) == []  # no index file, no data directory


def test_an_unknown_atdata_key_on_a_plain_asset_names_the_asset_and_the_known_keys(tmp_path):
    with pytest.raises(ConfigurationError, match=r"numbers.*unknown metadata key.*atdata/maxcont.*atdata/maxcount"):
        validate_definitions(_defs(_asset({"atdata/maxcont": 10}), tmp_path=tmp_path))


def test_a_value_of_the_wrong_kind_fails_naming_the_key_and_the_value(tmp_path):
    with pytest.raises(ConfigurationError, match=r"numbers.*atdata/maxcount.*positive integer.*'ten'"):
        validate_definitions(_defs(_asset({"atdata/maxcount": "ten"}), tmp_path=tmp_path))


def test_a_repository_the_index_does_not_mount_fails_naming_the_mounted_ones(tmp_path):
    repos = {"lab": RepositoryConfig(path=str(tmp_path / "lab.db"))}
    with pytest.raises(ConfigurationError, match=r"numbers.*'labb'.*\['lab', 'local'\]") as err:
        validate_definitions(_defs(_asset({"atdata/repo": "labb"}), tmp_path=tmp_path, repos=repos))
    assert "AtdataIndexResource.repos" in str(err.value)
    # the same name spelled right loads
    validate_definitions(_defs(_asset({"atdata/repo": "lab"}), tmp_path=tmp_path, repos=repos))


def test_the_io_managers_own_default_repository_is_checked_too(tmp_path):
    index = AtdataIndexResource(path=str(tmp_path / "i.db"))
    defs = dg.Definitions(assets=[_asset()], resources={"io_manager": AtdataIOManager(index=index, repo="archive")})
    with pytest.raises(ConfigurationError, match=r"'archive'"):
        validate_definitions(defs)


def test_a_bad_columns_option_on_an_input_fails_naming_the_upstream(tmp_path):
    @dg.asset(ins={"numbers": dg.AssetIn(metadata={"columns": "label"})})
    def downstream(numbers):
        return []

    with pytest.raises(ConfigurationTypeError, match=r"input from .*numbers.*'columns' must be a non-empty list"):
        validate_definitions(_defs(_asset(), downstream, tmp_path=tmp_path))


def test_assets_stored_by_another_io_manager_are_left_alone(tmp_path):
    index = AtdataIndexResource(path=str(tmp_path / "i.db"))
    other = _asset({"atdata/maxcount": "not ours to check"}, key="report", io_manager_key="fs")
    defs = dg.Definitions(assets=[other], resources={"io_manager": AtdataIOManager(index=index),
                                                     "fs": dg.FilesystemIOManager(base_dir=str(tmp_path / "fs"))})
    assert validate_definitions(defs) is defs


def test_the_example_project_is_validated_when_it_loads():
    import inspect

    import example_project.definitions as example

    assert "validate_definitions(dg.Definitions(" in inspect.getsource(example)
    assert validate_definitions(example.defs) is example.defs
