"""LMDB databases of Datum records: a wrapping cursor for the Data layer, and an atomic writer.

Caffe's Data layer reads LMDB or LevelDB (db_lmdb.cpp, db_leveldb.cpp). protonet reads LMDB
only; a LevelDB gets a ProtonetError that says how to convert it. Writers build the database in
a fresh sibling directory and rename it into place at the end, so a failed conversion never
leaves a half-written database under the final name, nor touches an existing one.
"""

import os
import shutil
import tempfile
import threading

import lmdb

from ..errors import ProtonetError
from ..log import get_logger

log = get_logger(__name__)

LEVELDB_HELP = ("LevelDB is not supported; convert it to LMDB: recreate it with `protonet "
                "convert_imageset` (or `protonet data mnist`, `protonet convert_cifar`), or copy "
                "it record by record in Python (pip install plyvel lmdb; for key, value in "
                "plyvel.DB(src): txn.put(key, value)), then set `backend: LMDB` and point "
                "`source` at the new directory")
_COMMIT_EVERY = 1000
_INITIAL_MAP_SIZE = 1 << 26


def _looks_like_leveldb(path):
    names = os.listdir(path)
    return "CURRENT" in names or any(n.startswith("MANIFEST-") or n.endswith(".ldb")
                                     for n in names)


def check_lmdb_dir(source):
    """Check that ``source`` is an LMDB directory; a helpful ProtonetError otherwise."""
    if not source:
        raise ProtonetError("no source given; set data_param.source to the LMDB directory")
    if os.path.isfile(source):
        parent = os.path.dirname(source) or "."
        hint = f" ('{parent}')" if os.path.basename(source) in ("data.mdb", "lock.mdb") else ""
        raise ProtonetError(f"source is a file; source must be the LMDB directory{hint}, the "
                            f"folder that holds data.mdb", file=source)
    if not os.path.isdir(source):
        raise ProtonetError("no such database; source must be the LMDB directory (the folder "
                            "that holds data.mdb), relative to the directory you run from",
                            file=source)
    if not os.path.isfile(os.path.join(source, "data.mdb")):
        if _looks_like_leveldb(source):
            raise ProtonetError(LEVELDB_HELP, file=source)
        raise ProtonetError("this directory holds no data.mdb; source must be the LMDB "
                            "directory", file=source)


# py-lmdb opens an environment only once per process, so readers of the same database (a train
# and a test net, a tool run beside training) share one, closed when its last reader closes.
_ENVS = {}
_ENVS_LOCK = threading.Lock()


def _open_env(source):
    key = os.path.realpath(source)
    with _ENVS_LOCK:
        if key not in _ENVS:
            try:
                env = lmdb.open(source, readonly=True, lock=False, readahead=False, subdir=True)
            except lmdb.Error as err:
                raise ProtonetError(f"could not open the LMDB database ({err})",
                                    file=source) from None
            _ENVS[key] = [env, 0]
        _ENVS[key][1] += 1
        return key, _ENVS[key][0]


def _release_env(key):
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            _ENVS.pop(key)[0].close()


class LMDBCursor:
    """Reads (key, value) pairs in key order and wraps around at the end, like Caffe's cursor.

    ``wrapped`` is called (with no arguments) whenever the cursor restarts from the first record.
    """

    def __init__(self, source):
        check_lmdb_dir(source)
        self.source = source
        self._env_key, self._env = _open_env(source)
        self.entries = self._env.stat()["entries"]
        if self.entries == 0:
            self._env = None
            _release_env(self._env_key)
            raise ProtonetError("the database is empty", file=source)
        log.info("Opened lmdb %s", source)
        self._txn = self._env.begin(buffers=False)
        self._cursor = self._txn.cursor()
        self._cursor.first()

    def key(self):
        return self._cursor.key().decode("utf-8", errors="replace")

    def value(self):
        return self._cursor.value()

    def next(self):
        """Advance; return True when the cursor went back to the first record."""
        if self._cursor.next():
            return False
        self._cursor.first()
        return True

    def skip(self, n):
        for _ in range(n):
            self.next()

    def close(self):
        if self._env is not None:
            self._txn.abort()
            self._env = None
            _release_env(self._env_key)


def iterate_lmdb(source):
    """Yield every (key, value) of an LMDB once, in key order (for tools)."""
    check_lmdb_dir(source)
    key, env = _open_env(source)
    try:
        with env.begin(buffers=False) as txn:
            for record_key, value in txn.cursor():
                yield record_key.decode("utf-8", errors="replace"), value
    finally:
        _release_env(key)


class LMDBWriter:
    """Writes records into a new LMDB at ``path``, atomically.

    Use as a context manager: records go to a temporary sibling directory; on a clean exit it is
    renamed to ``path``; on an exception it is deleted and ``path`` is left as it was. An
    existing ``path`` is an error unless ``overwrite`` (then it is replaced only at the end).
    """

    def __init__(self, path, overwrite=False):
        self.path = os.path.abspath(os.fspath(path))
        self.overwrite = overwrite
        self.count = 0
        self._pending = []
        self._tmp = None
        self._env = None

    def __enter__(self):
        if os.path.exists(self.path) and not self.overwrite:
            raise ProtonetError("already exists; remove it or pass --overwrite", file=self.path)
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
            self._tmp = tempfile.mkdtemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp",
                                         dir=parent)
        except OSError as err:
            raise ProtonetError(f"cannot create the database: {err.strerror}",
                                file=self.path) from None
        self._env = lmdb.open(self._tmp, map_size=_INITIAL_MAP_SIZE, subdir=True, lock=True)
        return self

    def put(self, key, value):
        """Queue one record; records are committed in transactions of 1000, as Caffe's tools do."""
        self._pending.append((key.encode("utf-8") if isinstance(key, str) else key, value))
        self.count += 1
        if len(self._pending) >= _COMMIT_EVERY:
            self.commit()

    def commit(self):
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                # Caffe quirk: db_lmdb.cpp doubles the map size and retries the whole commit.
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
        self._pending = []

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.commit()
                self._env.sync(True)
            self._env.close()
        finally:
            if exc_type is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
        if exc_type is None:
            self._install()
        return False

    def _install(self):
        old = None
        if os.path.exists(self.path):
            old = tempfile.mkdtemp(prefix=os.path.basename(self.path) + ".", suffix=".old",
                                   dir=os.path.dirname(self.path))
            os.rmdir(old)
            os.rename(self.path, old)
        os.rename(self._tmp, self.path)
        os.chmod(self.path, 0o755)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
