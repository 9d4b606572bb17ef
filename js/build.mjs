// Bundles the widgets' front end into ../src/scripthut/static/ (one ES module + its CSS).
// `node build.mjs` minifies; `--dev` keeps names and adds inline source maps;
// `--watch` rebuilds on change (with ANYWIDGET_HMR=1 open widgets reload).
import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const dev = process.argv.includes("--dev");
const watch = process.argv.includes("--watch");

const options = {
  entryPoints: { widgets: path.join(here, "widgets", "widget.ts") },
  outdir: path.join(here, "..", "src", "scripthut", "static"),
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: !dev,
  sourcemap: dev ? "inline" : false,
  legalComments: "eof",
  logLevel: "info",
};

if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}
