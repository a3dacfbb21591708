#!/usr/bin/env python3
"""Tier 1 (host only, no VM): `ember image prepare IMAGE` turns the test images of images.py, in
each input form (OCI layout, oci-archive, docker-archive, plain root directory), into an erofs disk
in the cache (EMBER_CACHE): converted on the first run, cached on the second (the disk untouched,
no progress lines), the same digest for an OCI layout and its oci-archive, the right content
(whiteouts and opaque directories applied, files byte-identical, owners and modes kept; read back
with `fsck.erofs --extract`), progress lines with EMBER_PROGRESS=1; and one-line errors for a
corrupt tar, a missing path, a truncated layer blob and a layer that names ../escape. IMAGE:REF
selects by OCI ref name / docker RepoTags; a layer over 64 MiB shows progress unasked. MEASURE
lines give each form's first and cached run times and disk sizes (information, never asserted).

usage: image_test.py EMBER"""
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile

import common
import images

EMBER = os.path.abspath(sys.argv[1])
tally = common.Tally()
work = tempfile.mkdtemp(prefix="ember-image-test-")
FORMS = ("oci", "oci-archive", "docker-archive", "rootfs")


def environment(cache, progress):
    env = dict(os.environ, EMBER_CACHE=cache)
    env.pop("EMBER_PROGRESS", None)
    if progress:
        env["EMBER_PROGRESS"] = "1"
    return env


def prepare(reference, cache, progress=False, cwd=None):
    """Runs ember image prepare; returns (Result, {key: value} from its 'key: value' lines)."""
    command = [EMBER, "image", "prepare", reference]
    if cwd:  # common.run has no cwd; the hostile-layer case runs from a directory of its own
        command = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, *command]
    result = common.run(command, 120, env=environment(cache, progress))
    fields = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    if result.stdout.strip() in ("converted", "cached"):
        fields.setdefault("state", result.stdout.strip())
    return result, fields


def progress_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("ember: ")]


def extract(disk, name):
    """The erofs image's content as a directory (fsck.erofs checks it while extracting)."""
    target = os.path.join(work, "extracted", name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    result = common.run(["fsck.erofs", f"--extract={target}", disk], 120)
    tally.check(f"{name}: fsck.erofs --extract accepts the disk", result.returncode == 0,
                result.describe())
    return target if result.returncode == 0 else None


def listing(root):
    """{relative path: (kind, mode, uid, gid, symlink target or size)} of a directory tree."""
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                detail = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                detail = ("dir", None)
            else:
                detail = ("file", st.st_size)
            entries[os.path.relpath(path, root)] = (detail[0], stat.S_IMODE(st.st_mode), st.st_uid,
                                                    st.st_gid, detail[1])
    return entries


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def check_busybox_content(name, root):
    host_busybox = read(images.BUSYBOX)
    tally.check(f"{name}: /etc/motd-delete-me is whited out",
                not os.path.lexists(os.path.join(root, "etc/motd-delete-me")))
    opaque = sorted(os.listdir(os.path.join(root, "opaque"))) \
        if os.path.isdir(os.path.join(root, "opaque")) else None
    tally.check(f"{name}: /opaque is opaque (only c)", opaque == ["c"], f"/opaque has {opaque}")
    tally.check(f"{name}: /etc/ember-test-image says busybox",
                (read(os.path.join(root, "etc/ember-test-image")) or b"").strip() == b"busybox")
    tally.check(f"{name}: /bin/busybox is identical to the host's",
                read(os.path.join(root, "bin/busybox")) == host_busybox)
    tally.check(f"{name}: /bin/sh is a symlink to busybox",
                os.path.islink(os.path.join(root, "bin/sh")) and
                os.readlink(os.path.join(root, "bin/sh")) == "busybox")
    tally.check(f"{name}: /etc/passwd names app",
                b"app:x:1000:1000:app:/home/app:/bin/sh" in (read(os.path.join(root, "etc/passwd")) or b""))
    whiteouts = [p for p in listing(root) if os.path.basename(p).startswith(".wh.")]
    tally.check(f"{name}: no whiteout file is left in the tree", not whiteouts, str(whiteouts[:5]))
    tmp = os.lstat(os.path.join(root, "tmp")) if os.path.isdir(os.path.join(root, "tmp")) else None
    tally.check(f"{name}: /tmp keeps mode 1777", tmp is not None and stat.S_IMODE(tmp.st_mode) == 0o1777)
    home = os.path.join(root, "home/app")
    tally.check(f"{name}: /home/app keeps owner 1000:1000",
                os.path.isdir(home) and (os.lstat(home).st_uid, os.lstat(home).st_gid) == (1000, 1000))


def check_dynamic_content(name, root):
    missing, different = [], []
    for path in images.dynamic_files():
        image_path = os.path.join(root, path)
        if not os.path.lexists(image_path):
            missing.append(path)
        elif os.path.islink(image_path):
            if os.readlink(image_path) != os.readlink("/" + path):
                different.append(path)
        elif read(image_path) != read(os.path.realpath("/" + path)):
            different.append(path)
    tally.check(f"{name}: {images.DYNAMIC_PROGRAM}, its libraries and the loader are there",
                not missing, f"missing {missing}")
    tally.check(f"{name}: they are identical to the host's", not different, f"different {different}")
    tally.check(f"{name}: /etc/ember-probe is there",
                read(os.path.join(root, "etc/ember-probe")) == images.PROBE_TEXT)


def cache_is_clean(cache):
    """No finished entry and no temporary left in the cache after a failed prepare."""
    left = []
    for directory, dirs, files in os.walk(cache):
        left += [os.path.relpath(os.path.join(directory, n), cache) for n in files]
    return not left, left


def expect_error(name, reference, needles, any_of=(), cwd=None):
    cache = os.path.join(work, "cache-error-" + "".join(c if c.isalnum() else "-" for c in name))
    result, _ = prepare(reference, cache, cwd=cwd)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    text = lines[0] if len(lines) == 1 else ""
    ok = (result.returncode is not None and result.returncode > 0 and len(lines) == 1 and
          text.startswith("ember: ") and all(n in text for n in needles) and
          (not any_of or any(n in text.lower() for n in any_of)))
    tally.check(f"{name}: non-zero exit and one 'ember: ' line naming {needles}"
                + (f" and one of {list(any_of)}" if any_of else ""), ok,
                f"exit {result.returncode}, stderr {result.stderr!r}")
    clean, left = cache_is_clean(cache)
    tally.check(f"{name}: no cache entry or temporary is left", clean, str(left[:5]))
    return result


common.announce(1, "ember image prepare: container images into erofs disks, no guest")
try:
    built = images.build_test_images(os.path.join(work, "images"))
except Exception as error:  # skopeo or a host file missing: one failure, not a traceback
    tally.check("images.py builds the test images", False, str(error))
    tally.finish()
tally.check("images.py builds the test images", True)

digests = {}
trees = {}
measures = []
for image_name, forms in built.items():
    for form in FORMS:
        name = f"{image_name} {form}"
        cache = os.path.join(work, f"cache-{image_name}-{form}")
        first, fields = prepare(forms[form], cache, progress=True)
        disk = fields.get("disk", "")
        ok = tally.check(f"{name}: first run exits 0 with state converted",
                         first.returncode == 0 and fields.get("state") == "converted" and
                         fields.get("digest", "").startswith("sha256:") and os.path.isfile(disk),
                         first.describe())
        lines = progress_lines(first)
        expected = ["ember: building erofs image ("] + \
            ([] if form == "rootfs" else [f"ember: converting {forms[form]}: layer 1/"])
        tally.check(f"{name}: EMBER_PROGRESS=1 shows progress lines on the first run ({expected})",
                    first.returncode == 0 and
                    all(any(line.startswith(e) for line in lines) for e in expected),
                    f"exit {first.returncode}, stderr {first.stderr!r}")
        if not ok:
            continue
        tally.check(f"{name}: size: is the disk's size",
                    fields.get("size") == str(os.path.getsize(disk)), f"size {fields.get('size')}")
        tally.check(f"{name}: the disk is in EMBER_CACHE",
                    os.path.realpath(disk).startswith(os.path.realpath(cache) + os.sep), disk)
        digests[(image_name, form)] = fields["digest"]
        before = os.stat(disk)
        second, fields2 = prepare(forms[form], cache, progress=True)
        after = os.stat(disk) if os.path.exists(disk) else None
        tally.check(f"{name}: second run exits 0 with state cached, the same digest and disk",
                    second.returncode == 0 and fields2.get("state") == "cached" and
                    fields2.get("digest") == fields["digest"] and fields2.get("disk") == disk,
                    second.describe())
        tally.check(f"{name}: second run leaves the disk untouched (inode, mtime)",
                    after is not None and (after.st_ino, after.st_mtime_ns) ==
                    (before.st_ino, before.st_mtime_ns))
        tally.check(f"{name}: second run prints no progress lines", not progress_lines(second),
                    f"stderr {second.stderr!r}")
        measures.append(f"{name}: first run {first.seconds:.2f} s, cached run {second.seconds:.3f} s, "
                        f"disk {int(fields['size']) / 1048576:.2f} MiB")
        root = extract(disk, f"{image_name}-{form}")
        if root:
            trees[(image_name, form)] = listing(root)
            (check_busybox_content if image_name == "busybox" else check_dynamic_content)(name, root)

    for form in ("oci-archive", "docker-archive", "rootfs"):
        a, b = trees.get((image_name, "oci")), trees.get((image_name, form))
        if a is not None and b is not None:
            differ = sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))
            tally.check(f"{image_name}: the {form} disk has the same tree as the oci disk", not differ,
                        "; ".join(f"{p}: {a.get(p)} vs {b.get(p)}" for p in differ[:5]))
    tally.check(f"{image_name}: oci and oci-archive give the same digest",
                digests.get((image_name, "oci")) is not None and
                digests.get((image_name, "oci")) == digests.get((image_name, "oci-archive")),
                f"{digests.get((image_name, 'oci'))} vs {digests.get((image_name, 'oci-archive'))}")

for line in measures:
    print(f"MEASURE {line}", flush=True)

# IMAGE:REF picks an image by its OCI ref name or docker RepoTags.
for image_name, form, ref in (("busybox", "oci", "latest"), ("busybox", "oci-archive", "latest"),
                              ("busybox", "docker-archive", f"ember-test/busybox:latest")):
    reference = f"{built[image_name][form]}:{ref}"
    result, fields = prepare(reference, os.path.join(work, f"cache-{image_name}-{form}"))
    tally.check(f"{image_name} {form} as {os.path.basename(reference)}: the cached disk of its form",
                result.returncode == 0 and fields.get("state") == "cached" and
                fields.get("digest") == digests.get((image_name, form)), result.describe())
expect_error("OCI layout with an unknown ref", built["busybox"]["oci"] + ":no-such-tag",
             ["no manifest named 'no-such-tag'", "latest"])
expect_error("docker-archive with an unknown tag", built["busybox"]["docker-archive"] + ":other:v1",
             ["no image tagged 'other:v1'"])

# One cache shared by the OCI layout and its oci-archive: the archive finds the layout's disk.
shared_cache = os.path.join(work, "cache-shared")
prepare(built["busybox"]["oci"], shared_cache)
result, fields = prepare(built["busybox"]["oci-archive"], shared_cache)
tally.check("busybox oci-archive after its OCI layout in one cache: state cached",
            result.returncode == 0 and fields.get("state") == "cached", result.describe())
# Without EMBER_PROGRESS (stderr is a pipe, small layers) a conversion prints nothing on stderr.
result, fields = prepare(built["dynamic"]["oci"], os.path.join(work, "cache-quiet"))
tally.check("without EMBER_PROGRESS a small conversion is silent on stderr",
            result.returncode == 0 and fields.get("state") == "converted" and not result.stderr.strip(),
            result.describe())

# A large image (over 64 MiB of layers) shows progress without EMBER_PROGRESS.
large = os.path.join(work, "large-oci")
images.write_oci_layout(large, [[images.file_entry("big", bytes(65 << 20))]], {"Cmd": ["sh"]},
                        compress=False)
result, fields = prepare(large, os.path.join(work, "cache-large"))
tally.check("a 65 MiB layer shows progress lines without EMBER_PROGRESS",
            result.returncode == 0 and fields.get("state") == "converted" and
            any(line.startswith(f"ember: converting {large}: layer 1/1 (65.0 MiB)")
                for line in progress_lines(result)) and
            any(line.startswith("ember: building erofs image (1 file)") for line in progress_lines(result)),
            result.describe())
print(f"MEASURE large (65 MiB of zeros, one uncompressed layer): first run {result.seconds:.2f} s, "
      f"disk {int(fields.get('size', 0)) / 1048576:.2f} MiB", flush=True)
shutil.rmtree(large, ignore_errors=True)
shutil.rmtree(os.path.join(work, "cache-large"), ignore_errors=True)

# --- errors -----------------------------------------------------------------------------------------
random.seed(11)
corrupt = os.path.join(work, "corrupt.tar")
with open(corrupt, "wb") as f:
    f.write(bytes(random.getrandbits(8) for _ in range(1 << 16)))
expect_error("corrupt tar (random bytes)", corrupt, [corrupt])

missing = os.path.join(work, "no-such-image")
expect_error("missing path", missing, [missing], any_of=("no such file",))

truncated = os.path.join(work, "truncated-oci")
shutil.copytree(built["busybox"]["oci"], truncated)
blobs = os.path.join(truncated, "blobs", "sha256")
largest = max(os.listdir(blobs), key=lambda b: os.path.getsize(os.path.join(blobs, b)))
with open(os.path.join(blobs, largest), "r+b") as f:
    f.truncate(os.path.getsize(os.path.join(blobs, largest)) // 2)
expect_error("OCI layout with a truncated layer blob", truncated, [truncated],
             any_of=("sha256", "digest", "mismatch", "does not match", "corrupt", "truncated"))

hostile = os.path.join(work, "hostile")
inside = os.path.join(hostile, "cwd", "sub")
os.makedirs(inside)
images.write_oci_layout(os.path.join(hostile, "escape-oci"), [[
    images.dir_entry("etc"), images.file_entry("etc/ok", b"fine\n"),
    images.file_entry("../escape", b"written outside the root\n")]], {"Cmd": ["sh"]})
expect_error("layer naming ../escape", os.path.join(hostile, "escape-oci"), ["../escape"],
             cwd=inside)
escaped = [os.path.join(d, n) for d, _, files in os.walk(work) for n in files if n == "escape"]
escaped += [p for p in ("/escape", "/tmp/escape", os.path.join(os.path.dirname(work), "escape"))
            if os.path.exists(p)]
tally.check("layer naming ../escape: nothing named escape is written anywhere near", not escaped,
            str(escaped))

# A symlink to a directory outside the root, then a file through it: whatever ember does with the
# layer, nothing may appear in the outside directory.
outside = os.path.join(hostile, "outside")
os.makedirs(outside)
images.write_oci_layout(os.path.join(hostile, "symlink-oci"), [[
    images.symlink_entry("link", outside),
    images.file_entry("link/escape-through-link", b"written outside the root\n")]], {"Cmd": ["sh"]})
result, _ = prepare(os.path.join(hostile, "symlink-oci"), os.path.join(work, "cache-symlink"),
                    cwd=inside)
tally.check("layer writing through a symlink to an outside directory: nothing written there",
            os.listdir(outside) == [] and result.returncode is not None and result.returncode >= 0,
            f"outside has {os.listdir(outside)}; {result.describe()}")

if tally.failed == 0:
    shutil.rmtree(work, ignore_errors=True)
else:
    print(f"work directory kept: {work}", flush=True)
tally.finish()
