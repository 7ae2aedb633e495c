"""QPO's judge check: a chosen rewrite becomes a pair only when the judge finds it solvable and no
easier than the original; failures are counted by reason. The judge is scripted at the
`GenerateFn` boundary (its replies depend only on the prompt), so the rule itself is what is tested."""

from __future__ import annotations

from mathdata_pipeline.engines.base import Completion, RequestError
from mathdata_pipeline.scalequest.rewrite_prompts import judge_pairs

PAIRS = [
    ("A train travels 60 km in 1.5 hours and then 40 km in 0.5 hours. What is its average speed?", "A train moves."),
    ("Compute the area of a circle.", "What is the area of a circle of radius 3?"),  # unsolvable rewrite
    ("What is 2 + 2?", "A shop sells 3 boxes of 12 eggs and 5 loose eggs. How many eggs?"),  # easier rewrite
    ("Find x if 3x + 7 = 22 and then compute x squared.", "Find x if 3x = 9."),  # the judge fails (no reply)
]


def scripted_judge(requests, row_ids):
    replies = []
    for request in requests:
        prompt = request.message_dicts()[0]["content"]
        if "Find x if 3x + 7" in prompt and "Original problem" not in prompt:
            replies.append(RequestError("engine_error", "judge crashed"))
        elif "Original problem" in prompt:
            easier = "Rewritten problem:\nWhat is 2 + 2?" in prompt
            replies.append(Completion(f"Comparing the two.\nVerdict: {'No' if easier else 'Yes'}", "stop", 50, 9))
        else:
            unsolvable = "Compute the area of a circle." in prompt
            text = (
                "Yes, it is a math question, but the radius is missing.\nVerdict: No" if unsolvable else "Verdict: Yes"
            )
            replies.append(Completion(text, "stop", 50, 9))
    return replies


def test_only_solvable_rewrites_that_are_no_easier_become_pairs():
    kept, counts = judge_pairs(PAIRS, scripted_judge, max_tokens=64)
    assert kept == [PAIRS[0]]
    assert counts == {"judged": 4, "judge_unsolvable": 2, "judge_easier": 1}


def test_the_papers_any_yes_rule_lets_a_mixed_judgement_through():
    kept, counts = judge_pairs(PAIRS[:2], scripted_judge, max_tokens=64, any_yes=True)
    assert kept == PAIRS[:2] and counts["judge_unsolvable"] == 0
