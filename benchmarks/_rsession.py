"""A persistent R process for timing R functions from Python without R's start-up in the timing.

    with RSession() as r:
        r.run('suppressMessages(library(geepack)); d <- read.csv("x.csv")')
        seconds = r.time('geeglm(y ~ x, family = binomial, data = d, id = id)')

`time(expr)` evaluates `expr` in R and returns R's own elapsed time for it (`proc.time()` around the
call), so pipes and parsing are not counted.
"""

from __future__ import annotations

import subprocess

_DONE = "<<jaxmle-done>>"


class RSession:
    def __init__(self):
        self.proc = subprocess.Popen(
            ["R", "--vanilla", "--slave", "--no-echo"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1,
        )  # fmt: skip

    def run(self, code: str) -> str:
        """Evaluate `code` in R; return what it printed."""
        # the marker on a line of its own, even when `code` printed no final newline
        self.proc.stdin.write(f'{code}\ncat("\\n{_DONE}\\n")\n')
        self.proc.stdin.flush()
        lines = []
        for line in self.proc.stdout:
            if line.strip() == _DONE:
                return "".join(lines)
            lines.append(line)
        raise RuntimeError("R exited:\n" + "".join(lines))

    def time(self, expr: str, result: str = ".jaxmle_result") -> float:
        """R's elapsed seconds for `expr` (its value is kept in R as `result`)."""
        out = self.run(
            f".t0 <- proc.time()[[3]]; {result} <- {expr}; "
            'cat(sprintf("%.6f\\n", proc.time()[[3]] - .t0))'
        )
        return float(out.strip().splitlines()[-1])

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("q(save = 'no')\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
