// Parses an AsyncAPI document with the official parser (@asyncapi/parser, from the
// directory PARSER_DIR) and prints JSON: every diagnostic, and what the parser resolved
// of each message's payload (the union's members by their `type` constant and `data`
// fields, or the payload's own fields). Used by tests/unit/test_asyncapi_parser.py.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.PARSER_DIR + "/");
const { Parser } = require("@asyncapi/parser");
const path = process.argv[2];
const { document, diagnostics } = await new Parser().parse(readFileSync(path, "utf8"),
                                                          { source: path });
const names = (schema) => Object.keys((schema && schema.properties()) || {}).sort();
const messages = {};
for (const message of document ? document.allMessages() : []) {
  const payload = message.payload();
  messages[message.id()] = {
    fields: names(payload),
    union: (payload.oneOf() || []).map((member) => ({
      type: member.properties().type.const(),
      data: names(member.properties().data),
    })),
    headers: names(message.headers()),
  };
}
console.log(JSON.stringify({
  diagnostics: diagnostics.map((d) => ({ code: d.code, severity: d.severity,
                                         message: d.message, path: d.path.join("/") })),
  messages,
}));
