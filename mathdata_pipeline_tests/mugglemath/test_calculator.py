"""GSM8K calculator annotations: real ones pass, planted errors and injections fail, nothing runs."""

from __future__ import annotations

import builtins
import os

import pytest

from mathdata_pipeline.mugglemath.calculator import check_calculator_annotations

SEED = "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?"


def test_real_gsm8k_annotations_pass(gsm8k_train):
    results = [check_calculator_annotations(row["answer"]) for row in gsm8k_train]
    passed = sum(result.ok for result in results)
    assert sum(result.n_checked for result in results) > 20000
    assert passed / len(results) >= 0.99
    misses = [failure for result in results for failure in result.failures]
    # The two upstream misses are `//` typos: <<560//10=56>> and <<180//3=60>>.
    assert len(misses) <= len(results) // 100, misses[:20]


@pytest.mark.parametrize(
    "text",
    [
        "He pays 3*4=<<3*4=12>>12 dollars.",
        "<<$1,200/4=$300>> and <<300*2=600.>>",
        "<<2.5*4=10.0>> <<.5+.25=0.75>> <<-3+5=2>> <<(2+3)*(4-1)=15>>",
        "<<20%*50=10>> <<2^10=1024>> <<2**3=8>> <<12×3=36>> <<12÷4=3>> <<7−2=5>>",
        "<<10/3=3.333333333>> <<1/3*3=1>> <<0.1+0.2-0.3=0>>",
        "<<2^-1=0.5>> <<-2^2=-4>> <<2^3^2=512>> <<--3=3>>",
        "No annotations at all: 3 * 4 = 12.",
    ],
)
def test_valid_annotations(text):
    result = check_calculator_annotations(text)
    assert result.ok, result.failures


@pytest.mark.parametrize(
    "annotation, reason",
    [
        ("<<48/2=25>>", "48/2 = 24, not 25"),
        ("<<10/3=3.33>>", "not 3.33"),
        ("<<5*5=25=25>>", "exactly one '='"),
        ("<<5*x=25>>", "unexpected character 'x'"),
        ("<<560//10=56>>", "unexpected '/'"),
        ("<<5/0=1>>", "division by zero"),
        ("<<(2+3=5>>", "unbalanced parentheses"),
        ("<<2+=5>>", "incomplete expression"),
        ("<<=5>>", "empty expression"),
        ("<<9^9^9=1>>", "too large"),
        ("<<10**101=1>>", "too large"),
        ("<<(-8)^(1/3)=-2>>", "cannot compute"),
        ("<<" + "(" * 40 + "1" + ")" * 40 + "=1>>", "nested too deeply"),
        ("<<" + "1+" * 150 + "1=151>>", "longer than 200"),
        ("<<5*5=25 apples>>", "unexpected character 'a'"),
    ],
)
def test_planted_wrong_annotations(annotation, reason):
    result = check_calculator_annotations(f"So {annotation} in total.\n#### 25")
    assert not result.ok and result.n_checked == 1
    assert len(result.failures) == 1 and reason in result.failures[0]


def test_unclosed_annotation_is_a_failure():
    result = check_calculator_annotations("He has <<3*4=12>>12 and <<5*2=10 apples.")
    assert not result.ok and result.n_checked == 1 and "unbalanced" in result.failures[0]


@pytest.mark.parametrize(
    "annotation",
    [
        "<<__import__('os').system('touch /tmp/pwned')=0>>",
        "<<eval('2+2')=4>>",
        "<<exec('x=1')=0>>",
        "<<(lambda: 0)()=0>>",
        "<<open('/etc/passwd').read()=0>>",
        "<<().__class__.__bases__[0]=0>>",
        "<<1e400=1>>",
    ],
)
def test_injection_attempts_are_failures_and_never_run(annotation, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the checker must never execute code")

    monkeypatch.setattr(os, "system", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "open", forbidden)
    result = check_calculator_annotations(annotation)
    assert not result.ok and result.failures
