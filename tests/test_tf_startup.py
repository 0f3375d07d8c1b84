"""`leuko` on a machine without a GPU prints no CUDA start-up line, and hides nothing else."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from leuko.core import tf_startup


def test_only_the_start_up_noise_is_dropped(capfd):
    with tf_startup.stderr_without():
        os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine\n")
        os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see slightly "
                    b"different numerical results\n")
        os.write(2, b"a real problem: the model file is truncated\n")
    err = capfd.readouterr().err
    assert err == "a real problem: the model file is truncated\n"


def test_gpu_presence_is_read_from_device_nodes(tmp_path):
    assert not tf_startup.has_nvidia_gpu(tmp_path)
    (tmp_path / "nvidiactl").touch()  # the control node alone is no GPU
    assert not tf_startup.has_nvidia_gpu(tmp_path)
    (tmp_path / "nvidia0").touch()
    assert tf_startup.has_nvidia_gpu(tmp_path)


@pytest.mark.skipif(tf_startup.has_nvidia_gpu(), reason="a machine with a GPU")
def test_the_command_line_starts_tensorflow_without_cuda_lines():
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    code = ("import sys\nfrom leuko.tool import cli\nimport tensorflow as tf\n"
            "print(float(tf.reduce_sum(tf.ones(3))))\nprint('still shown', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3.0"
    assert "cuda" not in done.stderr.lower() and "absl" not in done.stderr
    assert "oneDNN" not in done.stderr  # printed twice on an AVX-512 CPU otherwise
    assert "still shown" in done.stderr


@pytest.mark.skipif(tf_startup.has_nvidia_gpu(), reason="a machine with a GPU")
def test_a_stage_notebook_that_starts_tensorflow_renders_without_a_stderr_box(tmp_path):
    """A notebook run as the stages run theirs (the ``leuko`` kernel, papermill's engine) that
    imports the package, then TensorFlow, and computes: its rendered report holds the result
    and no stderr output (the red box a supervisor would see above the summary)."""
    import nbformat
    from nbclient import NotebookClient

    from leuko.reporting.render import render_html

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from leuko.thesis import study\nimport tensorflow as tf\n"
        "print(float(tf.reduce_sum(tf.ones(3))))")])
    NotebookClient(nb, kernel_name="leuko", timeout=300).execute()
    outputs = nb.cells[0].outputs
    # the kernel may flush one print in several stream outputs: all of them stdout
    assert {o.get("name") for o in outputs} == {"stdout"}, outputs
    assert "".join(o["text"] for o in outputs).strip() == "3.0"
    nbformat.write(nb, tmp_path / "stage.ipynb")
    page = render_html(tmp_path / "stage.ipynb", tmp_path / "stage.html").read_text()
    assert "3.0" in page
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in page
