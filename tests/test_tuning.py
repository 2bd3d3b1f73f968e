"""wnetcli.tuning: malloc thresholds and single-threaded BLAS."""

from __future__ import annotations

import subprocess
import sys


def test_tune_malloc_applies_in_a_fresh_process():
    code = "from wnetcli.tuning import tune_malloc; print(tune_malloc())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert proc.stdout.strip() == expected


def test_tune_malloc_respects_the_users_own_setting():
    code = "from wnetcli.tuning import tune_malloc; print(tune_malloc())"
    env = {"PATH": "/usr/bin:/bin", "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.stdout.strip() == "False"


def test_single_threaded_blas_limits_then_restores_the_blas_threads():
    import scipy.cluster.vq  # noqa: F401  (loads the BLAS the post-processing's k-means uses)
    from threadpoolctl import threadpool_info

    from wnetcli.tuning import single_threaded_blas

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    assert before, "scipy's BLAS should be loaded"
    with single_threaded_blas():
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
