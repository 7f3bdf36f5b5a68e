"""The process's reader: shmconf.current_reader(), current(), and the deprecated reader()."""

from __future__ import annotations

import importlib

import pytest

import shmconf


def test_current_reader_is_the_reader_set_for_the_process(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1})
        reader = shmconf.attach(name)
        try:
            shmconf.set_reader(reader)
            assert shmconf.current_reader() is reader
            assert shmconf.current()["a"] == 1
        finally:
            shmconf.set_reader(None)
            reader.close()
        with pytest.raises(shmconf.NotAttachedError, match="set_reader"):
            shmconf.current_reader()
        publisher.unlink()


def test_the_reader_module_is_not_shadowed() -> None:
    module = importlib.import_module("shmconf.reader")
    assert shmconf.reader is module
    assert module.attach is shmconf.attach


def test_the_old_reader_function_still_works_with_a_warning(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1})
        reader = shmconf.attach(name)
        try:
            shmconf.set_reader(reader)
            with pytest.warns(DeprecationWarning, match=r"use shmconf\.current_reader\(\)"):
                assert shmconf.reader() is reader
        finally:
            shmconf.set_reader(None)
            reader.close()
        publisher.unlink()
