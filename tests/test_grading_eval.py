"""`scope-bench eval` grades each answer format of issue 25 right: a local OpenAI-compatible server
(127.0.0.1) answers every problem with a response in that format, the command runs in a subprocess,
and results.jsonl and summary.json (with the grader's version and policy) are read back from disk."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

# (response, gold, correct): the examples, through the whole eval pipeline
CASES = [
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5", 1),
    ("Final Answer: The final answer is 7.78. I hope it is correct.", "7.78", 1),
    ("So the answer is $\\boxed{4 4/9}$.", "44/9", 0),
    ("So the answer is $\\boxed{4 4/9}$.", "\\frac{40}{9}", 1),
    ("So the answer is $\\boxed{2 3}$.", "23", 0),
    ("So the answer is $\\boxed{28 percent}$.", "28\\%", 1),
    ("So the answer is $1, 2, 3, \\ldots$", "1, 2, 3", 0),
    ("So the answers are \\boxed{1}, \\boxed{2} and \\boxed{3}.", "\\{1,2,3\\}", 1),
    ("So $x = \\boxed{0}$.", "1 = \\zzz = x = 0", 1),
    ("The final answer is -4 0/0", "0", 0),
    ("Answer $9$", "9", 0),  # policy unboxed=anchored (the default): no answer phrase, no answer
]


def _server(responses_by_problem):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = json.dumps(body.get("messages") or body.get("prompt"))
            text = next(r for p, r in responses_by_problem.items() if json.dumps(p)[1:-1] in prompt)
            choices = [{"index": j, "finish_reason": "stop", "message": {"content": text}, "text": text}
                       for j in range(body.get("n", 1))]
            data = json.dumps({"choices": choices, "usage": {"completion_tokens": 5}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_eval_grades_each_answer_format(tmp_path):
    problems = {f"Problem number {i}: what is it?": (response, gold) for i, (response, gold, _) in enumerate(CASES)}
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"unique_id": f"p{i}", "problem": p, "answer": gold}) + "\n"
                            for i, (p, (_, gold)) in enumerate(problems.items())))
    server = _server({p: response for p, (response, _) in problems.items()})
    out = tmp_path / "run"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "scope_bench.cli", "eval", "--ckpt", "served-model", "--backend", "openai",
             "--base-url", f"http://127.0.0.1:{server.server_port}/v1", "--tasks", "math500",
             "--data", f"math500={data}", "--out", str(out), "--grading-workers", "1"],
            capture_output=True, text=True, timeout=300, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["problem_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    got = [results[f"p{i}"]["correct"] for i in range(len(CASES))]
    assert got == [c for _, _, c in CASES]
    # the prediction recorded is the one graded: the Minerva sentence's number, all three boxes
    assert results["p0"]["prediction"] == "5"
    assert results["p7"]["prediction"] == "1, 2, 3"
    assert results["p10"]["prediction"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grading"]["version"] == "2"
    assert summary["grading"]["policy"] == {"unboxed": "anchored", "percent": "drop", "decimal_comma": False}
    assert summary["tasks"]["math500"]["score"] == pytest.approx(100 * sum(c for _, _, c in CASES) / len(CASES))
