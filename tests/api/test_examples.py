"""Each pycaffe-style script in examples/ runs to completion (they assert their own results)."""

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The scripts take 1-3 s each with a warm Numba cache, far longer on a fresh machine (they
# compile their kernels). Speed is the benchmarks' business: the timeout only catches a hang.
TIMEOUT_S = 600


def run_example(name, *args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PROTONET_LOG_LEVEL="WARNING")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                            capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
                            cwd=ROOT, check=False)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_classification_example_agrees_with_classifier():
    out = run_example("classification.py")
    assert "Classifier:" in out and "predicted class:" in out


def test_net_surgery_example_reproduces_the_classifier_at_every_window(tmp_path):
    out = run_example("net_surgery.py", "--out", str(tmp_path))
    assert "fc6-conv weights are (16, 4, 7, 7)" in out
    assert "OK: the fully convolutional net reproduces the classifier" in out
    assert (tmp_path / "net_full_conv.caffemodel").stat().st_size > 0


def test_python_layer_example_matches_builtin_loss_and_passes_gradient_check():
    out = run_example("python_layer.py")
    assert "gradient check over 24 inputs" in out and out.rstrip().endswith("OK")


def test_netspec_lenet_example_prints_prototxt_and_writes_files(tmp_path):
    out = run_example("netspec_lenet.py", "--out", str(tmp_path))
    assert 'name: "conv1"' in out and 'type: "SoftmaxWithLoss"' in out
    assert "prob     (2, 10)" in out
    text = (tmp_path / "lenet_auto_test.prototxt").read_text()
    assert "mnist_test_lmdb" in text and "batch_size: 100" in text


def test_pyloss_module_imports_on_its_own_and_subclasses_layer():
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "examples") + os.pathsep + ROOT)
    result = subprocess.run([sys.executable, "-c", "import pyloss; print(pyloss."
                             "EuclideanLossLayer.__mro__[1].__name__)"], capture_output=True,
                            text=True, env=env, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "Layer", result.stderr
