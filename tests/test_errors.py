"""kidneyseg.errors: one-line errors naming the file, atomic text output, JSON reading."""

import pytest

from kidneyseg.errors import KidneysegError, read_json, write_text_atomic


def test_read_json_names_the_file_and_the_problem(tmp_path):
    good = write_text_atomic(tmp_path / "a.json", '{"x": 1}')
    assert read_json(good) == {"x": 1}
    assert read_json(write_text_atomic(tmp_path / "l.json", "[1, 2]"), kind=list) == [1, 2]
    assert read_json(tmp_path / "l.json", kind=None) == [1, 2]
    with pytest.raises(KidneysegError, match=r"l\.json.*plan must hold a JSON object"):
        read_json(tmp_path / "l.json", "plan")
    (tmp_path / "bad.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(KidneysegError, match=r"bad\.json.*cache file is not valid JSON"):
        read_json(tmp_path / "bad.json", "cache file")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(KidneysegError, match=r"bin\.json.*cannot read"):
        read_json(tmp_path / "bin.json")
    with pytest.raises(KidneysegError, match=r"missing\.json.*not found"):
        read_json(tmp_path / "missing.json")
    msg = ""
    try:
        read_json(tmp_path / "bad.json")
    except KidneysegError as exc:
        msg = str(exc)
    assert "\n" not in msg


def test_atomic_outputs_get_ordinary_permissions_not_owner_only(tmp_path):
    """mkstemp makes 0600 files; an output must get what a plain open() gives under the same umask."""
    import stat

    from kidneyseg.errors import atomic_path

    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    mode = stat.S_IMODE((tmp_path / "out.txt").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode)
    assert mode & 0o044  # readable by group/others under the usual umask, unlike mkstemp's 0600
