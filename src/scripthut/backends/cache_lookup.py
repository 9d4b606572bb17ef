"""The result cache as one Python process where the tasks run: the lookup when the host has
`python3` (else the bash script in `cache_store` does the same, more slowly: it forks a dozen
processes per task), and everything for an S3-compatible store (`s3://bucket/prefix`, with
boto3 and the host's own AWS credentials and `AWS_ENDPOINT_URL`). Self-contained: the
standard library (and boto3 for S3), Python >= 3.7. Arguments and replies are those of
`cache_store.LOOKUP_SCRIPT`, or of `SAVE_SCRIPT` after a first argument `save`.

In S3 an entry is `<prefix>/<key>/<upload>/files/...`, `.../sums`, `.../inputs`, and the
object `<prefix>/<key>/entry` naming the upload, written last: a reader only ever follows a
complete upload, and of two identical tasks storing at once the last pointer wins whole.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sys


def emit(tag: str, task: str, value: str) -> None:
    sys.stdout.write(f"{tag}\0{task}\0{value}\0")


def home(path: str) -> str:
    return os.path.expanduser(path) if path == "~" or path.startswith("~/") else path


def files_of(wd: str, patterns: list[str]) -> list[str] | None:
    """Regular files the patterns match (folders: every file under them), sorted; None when
    a pattern matches nothing."""
    found: set[str] = set()
    for pattern in patterns:
        matched = glob.glob(os.path.join(glob.escape(wd), pattern), recursive=True)
        if not matched:
            return None
        for path in matched:
            rel = os.path.relpath(path, wd)
            if os.path.islink(path):
                continue
            if os.path.isdir(path):
                for top, _dirs, names in os.walk(path):
                    found.update(
                        os.path.relpath(os.path.join(top, n), wd)
                        for n in names
                        if os.path.isfile(os.path.join(top, n))
                        and not os.path.islink(os.path.join(top, n))
                    )
            elif os.path.isfile(path):
                found.add(rel)
    return sorted(found, key=lambda p: p.encode())


def digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sums_of(wd: str, files: list[str]) -> str:
    return "".join(f"{digest(os.path.join(wd, f))}  {f}\n" for f in files)


def entry_ok(entry: str) -> str | None:
    try:
        with open(os.path.join(entry, "sums")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        expected, _, rel = line.partition("  ")
        path = os.path.join(entry, "files", rel)
        if not rel or os.path.islink(path) or not os.path.isfile(path) or digest(path) != expected:
            return None
    return "\n".join(lines) + "\n"


def restore(entry: str, wd: str, sums: str) -> None:
    for line in sums.splitlines():
        rel = line.partition("  ")[2]
        target = os.path.join(wd, rel)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.copyfile(os.path.join(entry, "files", rel), target)


class S3Store:
    """An entry store in a bucket; `None` methods' replies mean "not there"."""

    def __init__(self, url: str) -> None:
        import boto3  # type: ignore[import-not-found, unused-ignore]

        bucket, _, prefix = url[len("s3://") :].partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3")

    def name(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def read(self, name: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
            data: bytes = body.read()
            return data
        except Exception:
            return None

    def upload_of(self, key: str) -> str | None:
        data = self.read(self.name(key, "entry"))
        return data.decode().strip() if data else None

    def check(self, key: str) -> str | None:
        upload = self.upload_of(key)
        if not upload:
            return None
        sums = self.read(self.name(key, upload, "sums"))
        return sums.decode() if sums else None

    def restore(self, key: str, wd: str, sums: str) -> bool:
        upload = self.upload_of(key) or ""
        fetched = {}
        for line in sums.splitlines():
            expected, _, rel = line.partition("  ")
            data = self.read(self.name(key, upload, "files", rel))
            if data is None or hashlib.sha256(data).hexdigest() != expected:
                return False
            fetched[rel] = data
        for rel, data in fetched.items():
            target = os.path.join(wd, rel)
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        return True

    def save(self, key: str, wd: str, files: list[str], inputs: str) -> str | None:
        if self.upload_of(key):
            return None
        upload = os.urandom(8).hex()
        for rel in files:
            self.client.upload_file(
                os.path.join(wd, rel), self.bucket, self.name(key, upload, "files", rel)
            )
        sums = sums_of(wd, files)
        self.client.put_object(
            Bucket=self.bucket, Key=self.name(key, upload, "sums"), Body=sums.encode()
        )
        self.client.put_object(
            Bucket=self.bucket, Key=self.name(key, upload, "inputs"), Body=inputs.encode()
        )
        self.client.put_object(
            Bucket=self.bucket, Key=self.name(key, "entry"), Body=upload.encode()
        )
        return sums


def save_one(
    store: S3Store, task: str, wd: str, key: str, inputs: str, patterns: list[str]
) -> None:
    files = files_of(wd, patterns) if os.path.isdir(wd) else None
    if not files:
        return emit("X", task, "the outputs match no file")
    if key == "-":
        return emit("O", task, sums_of(wd, files))
    try:
        sums = store.save(key, wd, files, inputs)
    except Exception as exc:
        return emit("X", task, f"cannot write to the store: {exc}")
    if sums is None:
        return emit("X", task, "already stored")
    emit("S", task, sums)


def save_main(args: list[str]) -> None:
    store = S3Store(args[0])
    rest = args[1:]
    while len(rest) >= 5:
        task, wd, key, inputs, n = rest[0], home(rest[1]), rest[2], rest[3], int(rest[4])
        patterns, rest = rest[5 : 5 + n], rest[5 + n :]
        save_one(store, task, wd, key, inputs, patterns)


def one(
    root: str,
    restoring: bool,
    task: str,
    wd: str,
    prefix: str,
    patterns: list[str],
    s3: S3Store | None = None,
) -> None:
    sums = ""
    if patterns:
        if not os.path.isdir(wd):
            return emit("N", task, f"working dir {wd} not found")
        files = files_of(wd, patterns)
        if files is None:
            return emit("N", task, "an input pattern matches no file")
        if not files:
            return emit("N", task, "the inputs match no file")
        try:
            sums = sums_of(wd, files)
        except OSError:
            return emit("N", task, "an input cannot be read")
    key = hashlib.sha256(f"{prefix}\n{sums}".encode()).hexdigest()
    emit("K", task, key)
    emit("I", task, sums)
    if s3 is not None:
        made = s3.check(key)
        if made is None:
            return emit("M", task, "")
        if restoring and not s3.restore(key, wd, made):
            return emit("M", task, "restore failed or an entry does not verify")
        emit("S", task, made)
        return emit("H", task, "")
    entry = os.path.join(root, key)
    made = entry_ok(entry)
    if made is None:
        return emit("M", task, "")
    if restoring:
        try:
            restore(entry, wd, made)
        except OSError:
            return emit("M", task, "restore failed")
    emit("S", task, made)
    emit("H", task, "")


def main(args: list[str]) -> None:
    if args and args[0] == "save":
        return save_main(args[1:])
    root, restoring, rest = home(args[0]), args[1] == "1", args[2:]
    s3 = S3Store(root) if root.startswith("s3://") else None
    while len(rest) >= 4:
        task, wd, prefix, n = rest[0], home(rest[1]), rest[2], int(rest[3])
        patterns, rest = rest[4 : 4 + n], rest[4 + n :]
        one(root, restoring, task, wd, prefix, patterns, s3)


if __name__ == "__main__":
    main(sys.argv[1:])
