"""The authors' released files: offline from the mirror folder, else downloaded with sha256 checked.

The table is ``../shared/data/README.md``'s: local path -> (path in the authors'
repository at the pinned commit, bytes, sha256).
"""

from __future__ import annotations

from pathlib import Path

from mmrepr.io import sha256_file

RELEASE_FILES: dict[str, tuple[str, int, str]] = {
    "allrecipes/train.tsv": ("elliot/data/allrecipes/train.tsv", 371516, "0ef8721dcb1bd9864065271b3e4cc76da89344d90b7ce825a63232687949ea3c"),
    "allrecipes/val.tsv": ("elliot/data/allrecipes/val.tsv", 208909, "5100d513ca54554857034185b6092b4a40adabf9f02e980f337d1e261064643b"),
    "allrecipes/test.tsv": ("elliot/data/allrecipes/test.tsv", 337990, "282c32b7391261d1d1cd46a06b2dd6cd29027a4209f022c6b65e6a381b116038"),
    "allrecipes/lvlm/qwen2vl-7b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen2_keywords.csv", 1214335, "01094818ad9345a7ddf5b6034cff7ddc7f9b19b4206190b0d7abd6b6ed9b50ba"),
    "allrecipes/lvlm/phi35vl__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_phi35_keyword.csv", 1179587, "b08eba85fda727c0b03ced03db72bb3ea1989485ce169f1c457235db1cb5c27b"),
    "allrecipes/lvlm/qwen25vl-3b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_25vl_3b_keywords.csv", 1293885, "c12847666377b0442f40054e4e3145a33a80f577947895038af9b07a2f4bcb3a"),
    "allrecipes/lvlm/qwen25vl-7b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_25vl_7b_keywords.csv", 1262807, "765fd91ee0e386b4967173d1e88128f0f9bdf61da606199c0dd27b0ca6e5ddff"),
    "allrecipes/lvlm/qwen3vl-2b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_3vl_2b_keywords.csv", 1307503, "b833303af2874be7f3f6b8d139d68844ea46c7cd36e5960ccf7a2323f2193bcc"),
    "allrecipes/lvlm/qwen3vl-4b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_3vl_4b_keywords.csv", 1238358, "c715c50a0b96e03d4d475d45ddaa689e523604227e42c72bf00705c8e85b7eae"),
    "allrecipes/lvlm/qwen3vl-8b__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_3vl_8b_keywords.csv", 1353732, "9924a921c0b336b9121fff3038ba22a78c2709d4b91401befb0b1ce77f39619d"),
    "allrecipes/lvlm/phi4mm__fitb.csv": ("extracted_outputs/allrecipes/allrecipes_phi_4_multimodal_keywords.csv", 1256204, "8e02eff47e9f3e5b776faf65ebf90926108c423718e9150e367eb054a7f3f7ac"),
    "allrecipes/lvlm/qwen2vl-7b__descr.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_2vl_7b_descriptive.csv", 1109934, "4d97142174d7fdc1e1492ae6076340bc0dd100ae460826410736ff029d5b21ca"),
    "allrecipes/lvlm/qwen2vl-7b__mis.csv": ("extracted_outputs/allrecipes/allrecipes_qwen_2vl_7b_mis.csv", 1339902, "a92a75c2ab19ba1ff5bcdcce8acf0138c9b360d290e746057a7dcbf0891953b1"),
    "allrecipes/lvlm/phi35vl__mis.csv": ("extracted_outputs/allrecipes/allrecipes_phi_35vl_mis.csv", 1567524, "fd25a827d65ba8241c71ce7b204eb041a71041ee67eaab29618a664a7487d4e2"),
    "baby/lvlm/qwen2vl-7b__fitb.csv": ("elliot/extracted_keywords/baby_QWEN2VL_keywords.csv", 2348781, "d75f4098ba191e2c142afb8d8c06cfd09636ebc345af78a507ef0cb3c7fae5ef"),
}


class ReleaseFileError(RuntimeError):
    pass


def release_url(base_url: str, rel: str) -> str:
    return f"{base_url.rstrip('/')}/{RELEASE_FILES[rel][0]}"


def fetch_release_file(rel: str, mirror_dir: Path | None, cache_dir: Path, base_url: str) -> Path:
    """Path to a verified copy of released file ``rel`` (e.g. ``allrecipes/train.tsv``).

    The mirror folder is read in place when it has the file; otherwise the file is
    downloaded into ``cache_dir/release/``. Either way its sha256 must match the table.
    """
    if rel not in RELEASE_FILES:
        raise ReleaseFileError(f"{rel!r} is not a released file; known: {', '.join(sorted(RELEASE_FILES))}")
    _, size, sha = RELEASE_FILES[rel]
    if mirror_dir is not None and (Path(mirror_dir) / rel).is_file():
        path = Path(mirror_dir) / rel
        actual = sha256_file(path)
        if actual != sha:
            raise ReleaseFileError(f"{path}: sha256 {actual} does not match the released {sha}")
        return path
    from mmrepr.data.download import download

    dest = Path(cache_dir) / "release" / rel
    download(release_url(base_url, rel), dest, sha256=sha)
    return dest
