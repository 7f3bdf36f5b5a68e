"""The process's reader: shmconf.current_reader(), current(), and the deprecated reader()."""

from __future__ import annotations

import importlib

import pytest

import shmconf
from tests.models import Database, Settings


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


def test_the_first_attached_reader_is_current_without_set_reader(name: str) -> None:
    with shmconf.Publisher(name) as publisher:
        publisher.publish({"a": 1})
        reader = shmconf.attach(name)
        try:
            assert shmconf.current()["a"] == 1
            assert shmconf.current_reader() is reader
            second = shmconf.attach(name)  # a second reader does not take over
            assert shmconf.current_reader() is reader
            second.close()
            third = shmconf.attach(name, make_current=True)
            assert shmconf.current_reader() is third
            third.close()  # a closed reader stops being current
            with pytest.raises(shmconf.NotAttachedError):
                shmconf.current()
        finally:
            reader.close()
        publisher.unlink()


def test_current_takes_the_model_for_the_type_checker(name: str) -> None:
    with shmconf.Publisher(name, model=Settings) as publisher:
        publisher.publish({"greeting": "hi", "database": {"host": "db", "password": "pw"}})
        with shmconf.attach(name, model=Settings):
            cfg = shmconf.current(Settings)
            assert cfg.greeting == "hi"
            assert shmconf.current_reader(Settings).get() is cfg
            with pytest.raises(TypeError, match="not a Database: attach with model=Database"):
                shmconf.current(Database)
        publisher.unlink()
