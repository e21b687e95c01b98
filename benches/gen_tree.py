#!/usr/bin/env python3
"""Generate a Cloudify-shaped image tree for benches/seed.sh: the 2021 directory list under
ROOT, FILES small files in deep directories (virtualenv-like), a few large files so the total
passes MBYTES, hard links, relative/absolute/dangling symlinks, several owners, xattrs, a
sparse file and a FIFO. Deterministic for a given seed."""
import os, random, sys

root, files, mbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1)
dirs = ["var/lib", "etc/cloudify", "opt/cfy", "opt/cloudify", "opt/cloudify-stage",
        "opt/manager", "opt/mgmtworker", "opt/restservice"]
# Where the files go, weighted like a manager image (plugins and virtualenvs dominate).
weights = [3, 1, 1, 2, 2, 3, 6, 2]
owners = [(0, 0), (26, 26), (101, 101), (999, 999), (1500, 1500)]
blob = os.urandom(1 << 20)

leaf_dirs = []
for d, w in zip(dirs, weights):
    for pkg in range(w * 40):
        base = os.path.join(root, d, "env/lib/python3.6/site-packages", f"pkg{pkg}")
        for sub in range(rng.randint(1, 6)):
            p = os.path.join(base, *[f"m{sub}-{k}" for k in range(rng.randint(0, 5))])
            os.makedirs(p, exist_ok=True)
            leaf_dirs.append(p)

total = 0
for i in range(files):
    p = os.path.join(rng.choice(leaf_dirs), f"f{i}.py")
    size = int(rng.expovariate(1 / 4096)) % 65536
    off = rng.randint(0, len(blob) - size - 1)
    with open(p, "wb") as f:
        f.write(blob[off:off + size])
    total += size
    uid, gid = owners[i % len(owners)]
    os.chown(p, uid, gid)
    os.chmod(p, [0o644, 0o600, 0o755, 0o640][i % 4])
    if i % 50 == 0:
        os.setxattr(p, "user.cfy.bench", b"x" * 16)
    if i % 200 == 0:
        os.link(p, p + ".hl")
    if i % 300 == 0:
        os.symlink(f"f{i}.py", p + ".rel")
        os.symlink("/does/not/exist", p + ".dangling")
        os.symlink("/etc/cloudify/config.yaml", p + ".abs")

# Large files (database and resources) up to the requested total.
big = 0
while total < mbytes * 1_000_000:
    d = ["var/lib/pgsql/9.5/data/base/16384", "opt/manager/resources/blobs"][big % 2]
    os.makedirs(os.path.join(root, d), exist_ok=True)
    p = os.path.join(root, d, f"big{big}")
    size = 64 << 20
    with open(p, "wb") as f:
        for _ in range(size >> 20):
            f.write(blob)
    total += size
    big += 1
with open(os.path.join(root, "var/lib/sparse"), "wb") as f:
    f.seek(256 << 20)
    f.write(b"end")
os.mkfifo(os.path.join(root, "var/lib/fifo"))
print(f"generated {files} small files, {big} large files, {total / 1e6:.0f} MB")
