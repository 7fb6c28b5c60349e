// Parses an AsyncAPI document with the official parser (@asyncapi/parser, pinned in
// package.json) and prints every diagnostic. Exit 1 on an error, or on a warning too with
// --strict. Usage: node tools/validate-asyncapi.mjs [--strict] FILE
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const args = process.argv.slice(2);
const strict = args.includes("--strict");
const file = args.filter((a) => a !== "--strict")[0];
const severities = ["error", "warning", "information", "hint"];
const { document, diagnostics } = await new Parser().parse(readFileSync(file, "utf-8"), { source: file });
for (const d of diagnostics) {
  console.log(`${severities[d.severity]} ${d.code} at ${d.path.join(".")}: ${d.message}`);
}
const worst = Math.min(...diagnostics.map((d) => d.severity), 9);
if (!document || worst === 0 || (strict && worst === 1)) {
  process.exit(1);
}
const channels = document.channels().all().map((c) => c.address());
console.log(`parsed: AsyncAPI ${document.version()}, channels ${channels.join(", ")}`);
