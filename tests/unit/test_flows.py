import os

from hypothesis import given, settings
from hypothesis import strategies as st
from wcmatch import glob

from chunkvault.config import parse_config
from chunkvault.flows import _FLAGS, FlowRules, any_of

PEERS = [{"name": f"p{i}", "path": f"/tmp/p{i}"} for i in range(3)]


def rules(**sections) -> FlowRules:
    return FlowRules(parse_config({"peers": PEERS, **sections}))


def test_default_ignores_cover_editor_and_download_temp_files():
    r = rules()
    for path in ("a/.file.swp", "x.tmp", "dl/video.part", "notes.txt~", ".~lock.doc#",
                 "deep/er/.#emacs", "file.crdownload"):  # fmt: skip
        assert r.ignored(path), path
        assert r.flow(path).ignore
    for path in ("notes.txt", "a/b/tmp/file", "partial.txt"):
        assert not r.ignored(path), path


def test_first_matching_rule_wins_and_fills_defaults():
    r = rules(
        replication={"replicas": 2},
        chunking={"compression": "zstd"},
        flows=[
            {"match": "**/*.iso", "ignore": True},
            {"match": "photos/**", "replicas": 3, "on_delete": "keep", "compression": "none"},
            {"match": "logs/*.log", "on_delete": "purge", "exec": ["echo", "hi"]},
            {"match": "**", "on_delete": "tombstone"},
        ],
    )
    assert r.flow("a/b/c/disk.iso").ignore
    assert r.flow("disk.iso").ignore
    photo = r.flow("photos/2024/cat.jpg")
    assert (photo.replicas, photo.on_delete, photo.compress) == (3, "keep", False)
    log = r.flow("logs/app.log")
    assert (log.on_delete, log.exec, log.replicas, log.compress) == (
        "purge",
        ("echo", "hi"),
        2,
        True,
    )
    assert r.flow("logs/deeper/app.log").on_delete == "tombstone"  # * stays in one directory
    assert r.flow("other.txt").rule == "**"


def test_path_patterns_in_ignore():
    r = rules(watch={"ignore": ["cache/**", "*.o"]})
    assert r.ignored("cache/a/b") and r.ignored("src/x.o")
    assert not r.ignored("src/cache.txt")


def test_names_that_are_not_utf8_or_hold_newlines_match_like_any_other():
    r = rules(flows=[{"match": "photos/**", "on_delete": "keep"}, {"match": "**"}])
    latin = os.fsdecode(b"photos/\xff/caf\xe9.jpg")
    assert r.flow(latin).on_delete == "keep"
    assert r.ignored(os.fsdecode(b"caf\xe9.txt.swp"))
    assert not r.ignored(os.fsdecode(b"caf\xe9.txt"))
    assert r.ignored("new\nline.tmp") and not r.ignored("new\nline.txt")
    assert r.flow("odd\x01\x1b[7m.txt").rule == "**"


GLOBS = ["*.tmp", "*.part", "*.swp", "*~", ".~lock*", ".#*", "*.crdownload", "cache/**",
         "**/*.iso", "photos/**", "logs/*.log", "**", "a/**/b", "[!x]*.c", "!*.txt",
         "*.{jpg,png}", "?", "**/.git/**", "dir/", "*\\*"]  # fmt: skip
# Paths built of pieces the globs care about, hostile characters included.
NAMES = st.lists(
    st.sampled_from([*"ab.x~#*?/\n", "tmp", "txt", "cache", "logs", "log", "iso", ".git",
                     "\udcff", "é", ".~lock", "jpg"]),
    max_size=8,
).map("".join)  # fmt: skip


@given(patterns=st.lists(st.sampled_from(GLOBS), max_size=4), path=NAMES)
@settings(max_examples=400, deadline=None)
def test_any_of_says_what_wcmatch_says_of_each_glob(patterns, path):
    expected = any(glob.globmatch(path, p, flags=_FLAGS) for p in patterns)
    assert any_of(patterns)(path) == expected


def test_a_name_ending_in_a_newline_matches_only_a_glob_that_allows_it():
    assert not any_of(["*.tmp"])("x.tmp\n")
    assert any_of(["*"])("x.tmp\n")
