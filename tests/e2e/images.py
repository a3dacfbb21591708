#!/usr/bin/env python3
"""ember's test container images, built from what Debian packages installed on this host
(busybox-static, coreutils, libc6) without a registry or a container engine.

Each image comes in four forms: an OCI image layout written here (python tarfile + hashlib + json,
deterministic: the same host files give the same digests), a docker-archive and an oci-archive
made from it by skopeo (offline), and a plain root filesystem directory with the layers applied.

  busybox: two layers. The lower has /bin/busybox and its applets, /etc/passwd, /etc/group,
           /home/app, /tmp (1777), /etc/motd-delete-me and /opaque/{a,b}; the upper whites out
           /etc/motd-delete-me (etc/.wh.motd-delete-me), makes /opaque opaque
           (opaque/.wh..wh..opq) with a new /opaque/c, and adds /etc/ember-test-image ("busybox").
  dynamic: one layer: /usr/bin/sha256sum, the libraries ldd lists and the dynamic loader;
           Entrypoint ["/usr/bin/sha256sum"], Cmd ["/etc/ember-probe"].

usage: images.py OUTDIR   (builds the images and prints their paths)

Importable: build_test_images(outdir) returns
  {"busybox": {"oci", "docker-archive", "oci-archive", "rootfs"},
   "dynamic": {"oci", "docker-archive", "oci-archive", "rootfs", "probe", "expect"}}
and write_oci_layout() / file_entry() / dir_entry() / symlink_entry() build other layouts
(hostile ones included: names are written as given)."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

MTIME = 1700000000  # fixed for every entry, file and blob
CREATED = "2023-11-14T22:13:20Z"
BUSYBOX = "/bin/busybox"
DYNAMIC_PROGRAM = "/usr/bin/sha256sum"
PROBE_TEXT = b"ember dynamic image probe\n"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
UNCOMPRESSED_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


# --- layer entries: (kind, path without leading '/', payload, mode, uid, gid) ---------------------
def dir_entry(path, mode=0o755, uid=0, gid=0):
    return ("dir", path.strip("/"), None, mode, uid, gid)


def file_entry(path, data, mode=0o644, uid=0, gid=0):
    return ("file", path.lstrip("/"), bytes(data), mode, uid, gid)


def symlink_entry(path, target):
    return ("symlink", path.lstrip("/"), target, 0o777, 0, 0)


def host_file_entry(host_path, image_path=None, mode=None):
    with open(host_path, "rb") as f:
        data = f.read()
    return file_entry(image_path or host_path, data,
                      mode if mode is not None else os.stat(host_path).st_mode & 0o7777)


def with_parents(entries):
    """Adds a 0755 directory entry for every parent that has none."""
    names = {e[1] for e in entries}
    extra = []
    for e in entries:
        parts = e[1].split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent and parent not in (".", "..") and parent not in names:
                names.add(parent)
                extra.append(dir_entry(parent))
    return entries + extra


def layer_tar(entries):
    """An uncompressed layer tar, entries sorted by name, fixed mtime; names written as given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, path, payload, mode, uid, gid in sorted(entries, key=lambda e: e[1]):
            info = tarfile.TarInfo(path)
            info.mtime = MTIME
            info.mode = mode
            info.uid, info.gid = uid, gid
            info.uname = info.gname = ""
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def _gzip(data):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def _put_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def _canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_oci_layout(layout, layers, config, ref="latest", compress=True):
    """Writes an OCI image layout at `layout` (replacing it): `layers` is a list of entry lists,
    lowest first; `config` the image's runtime config (Cmd, Env, ...); layers gzip-compressed
    unless `compress` is false. Returns the manifest digest ("sha256:<hex>")."""
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    descriptors, diff_ids, history = [], [], []
    for number, entries in enumerate(layers):
        raw = layer_tar(entries)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        if compress:
            descriptors.append({"mediaType": LAYER_MEDIA_TYPE, **_put_blob(layout, _gzip(raw))})
        else:
            descriptors.append({"mediaType": UNCOMPRESSED_LAYER_MEDIA_TYPE, **_put_blob(layout, raw)})
        history.append({"created": CREATED, "created_by": f"ember tests/e2e/images.py layer {number}"})
    image_config = {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    config_descriptor = {"mediaType": CONFIG_MEDIA_TYPE, **_put_blob(layout, _canonical(image_config))}
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                "config": config_descriptor, "layers": descriptors}
    manifest_descriptor = {"mediaType": MANIFEST_MEDIA_TYPE, **_put_blob(layout, _canonical(manifest)),
                           "annotations": {"org.opencontainers.image.ref.name": ref}}
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(_canonical({"imageLayoutVersion": "1.0.0"}))
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(_canonical({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
                            "manifests": [manifest_descriptor]}))
    return manifest_descriptor["digest"]


def apply_layers(layers):
    """The layers' combined effect (whiteouts and opaque markers applied): {path: entry}."""
    tree = {}
    for entries in layers:
        for e in sorted(entries, key=lambda e: e[1]):
            path = e[1]
            directory, base = os.path.split(path)
            if base == ".wh..wh..opq":
                for p in [p for p in tree if p.startswith(directory + "/")]:
                    if not any(x[1] == p for x in entries):
                        del tree[p]
            elif base.startswith(".wh."):
                victim = os.path.join(directory, base[4:])
                for p in [p for p in tree if p == victim or p.startswith(victim + "/")]:
                    del tree[p]
            else:
                tree[path] = e
    return tree


def write_rootfs(root, tree):
    """Writes {path: entry} as a plain directory with the entries' modes, owners and mtime."""
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for path in sorted(tree):
        kind, _, payload, mode, uid, gid = tree[path]
        target = os.path.join(root, path)
        if kind == "dir":
            os.makedirs(target, exist_ok=True)
        elif kind == "symlink":
            os.symlink(payload, target)
        else:
            with open(target, "wb") as f:
                f.write(payload)
        if kind != "symlink":
            os.chmod(target, mode)
        if os.geteuid() == 0:
            os.lchown(target, uid, gid)
    for path in sorted(tree, reverse=True):  # children first, so a directory's mtime sticks
        os.utime(os.path.join(root, path), (MTIME, MTIME), follow_symlinks=False)
    os.utime(root, (MTIME, MTIME))


def _skopeo(source, destination):
    command = ["skopeo"]
    if not os.path.exists("/etc/containers/policy.json"):
        command.append("--insecure-policy")
    result = subprocess.run(command + ["copy", "--quiet", source, destination],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy {source} {destination}: {result.stderr.strip()}")


def _all_forms(outdir, name, layers, config):
    oci = os.path.join(outdir, f"{name}-oci")
    write_oci_layout(oci, layers, config)
    docker_archive = os.path.join(outdir, f"{name}-docker-archive.tar")
    oci_archive = os.path.join(outdir, f"{name}-oci-archive.tar")
    for archive in (docker_archive, oci_archive):
        if os.path.exists(archive):
            os.remove(archive)
    _skopeo(f"oci:{oci}:latest", f"docker-archive:{docker_archive}:ember-test/{name}:latest")
    _skopeo(f"oci:{oci}:latest", f"oci-archive:{oci_archive}:latest")
    rootfs = os.path.join(outdir, f"{name}-rootfs")
    write_rootfs(rootfs, apply_layers(layers))
    return {"oci": oci, "docker-archive": docker_archive, "oci-archive": oci_archive,
            "rootfs": rootfs}


def busybox_layers():
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    lower = [
        host_file_entry(BUSYBOX, "bin/busybox", 0o755),
        *[symlink_entry(f"bin/{a}", "busybox") for a in sorted(set(applets)) if a != "busybox"],
        dir_entry("etc"),
        file_entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
                                 b"app:x:1000:1000:app:/home/app:/bin/sh\n"),
        file_entry("etc/group", b"root:x:0:\nwheel:x:10:app\napp:x:1000:\n"),
        file_entry("etc/motd-delete-me", b"the upper layer deletes this file\n"),
        dir_entry("home"),
        dir_entry("home/app", 0o755, 1000, 1000),
        dir_entry("root", 0o700),
        dir_entry("tmp", 0o1777),
        dir_entry("opaque"),
        file_entry("opaque/a", b"a from the lower layer\n"),
        file_entry("opaque/b", b"b from the lower layer\n"),
    ]
    upper = [
        dir_entry("etc"),
        file_entry("etc/.wh.motd-delete-me", b"", 0o600),
        file_entry("etc/ember-test-image", b"busybox\n"),
        dir_entry("opaque"),
        file_entry("opaque/.wh..wh..opq", b"", 0o600),
        file_entry("opaque/c", b"c from the upper layer\n"),
    ]
    return [with_parents(lower), with_parents(upper)]


def _ldd_paths(program):
    """The libraries ldd lists for `program` (resolved paths as ldd prints them) and the loader."""
    output = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in output.splitlines():
        words = line.split()
        if "=>" in words:
            target = words[words.index("=>") + 1]
            if target.startswith("/"):
                paths.append(target)
        elif words and words[0].startswith("/"):
            paths.append(words[0])  # the dynamic loader
    return paths


def dynamic_layers():
    entries = [host_file_entry(DYNAMIC_PROGRAM, None, 0o755)]
    seen = {DYNAMIC_PROGRAM}
    for path in _ldd_paths(DYNAMIC_PROGRAM):
        if path in seen:
            continue
        seen.add(path)
        if os.path.islink(path):
            # e.g. /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2:
            # the link as it is, and its target as a real file at the path the link names.
            link = os.readlink(path)
            entries.append(symlink_entry(path, link))
            target = link if link.startswith("/") else os.path.join(os.path.dirname(path), link)
            target = os.path.normpath(target)
            if target not in seen:
                seen.add(target)
                entries.append(host_file_entry(os.path.realpath(path), target, 0o755))
        else:
            entries.append(host_file_entry(os.path.realpath(path), path, 0o755))
    entries += [
        file_entry("etc/ember-probe", PROBE_TEXT),
        file_entry("etc/ember-test-image", b"dynamic\n"),
        file_entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        file_entry("etc/group", b"root:x:0:\n"),
        dir_entry("tmp", 0o1777),
    ]
    return [with_parents(entries)]


def dynamic_files():
    """Image paths of the dynamic program, its libraries and the loader (for content checks)."""
    return [e[1] for e in dynamic_layers()[0] if e[0] in ("file", "symlink")
            and not e[1].startswith(("etc/", "tmp"))]


def build_test_images(outdir):
    os.makedirs(outdir, exist_ok=True)
    busybox = _all_forms(outdir, "busybox", busybox_layers(),
                         {"Cmd": ["sh"], "Env": [PATH_ENV], "WorkingDir": "/"})
    dynamic = _all_forms(outdir, "dynamic", dynamic_layers(),
                         {"Entrypoint": [DYNAMIC_PROGRAM], "Cmd": ["/etc/ember-probe"],
                          "Env": [PATH_ENV], "WorkingDir": "/"})
    dynamic["probe"] = [DYNAMIC_PROGRAM, "/etc/ember-probe"]
    dynamic["expect"] = hashlib.sha256(PROBE_TEXT).hexdigest()
    return {"busybox": busybox, "dynamic": dynamic}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: images.py OUTDIR")
    images = build_test_images(os.path.abspath(sys.argv[1]))
    for name, forms in images.items():
        for form, value in forms.items():
            print(f"{name} {form}: {value if isinstance(value, str) else json.dumps(value)}")
