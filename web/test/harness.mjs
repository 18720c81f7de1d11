// What the end-to-end tests share: starting a demo binary, a headless Chromium, and checks
// that report as a test runner does.

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const artifacts = new URL("./artifacts/", import.meta.url).pathname;
mkdirSync(artifacts, { recursive: true });

/** Starts `bin` with `args` on a free loopback port; resolves once it prints its address. */
export function startDemo(bin, args = [], env = {}) {
  const name = bin.split("/").pop();
  const child = spawn(bin, ["--addr", "127.0.0.1:0", ...args], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env } });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      const m = line.match(/profiles: http:\/\/([\d.]+:\d+)\//);
      if (m) resolve({ child, addr: m[1] });
    });
    child.on("exit", (code) => reject(new Error(`${name} exited with ${code}`)));
  });
}

/** Debian's Chromium, headless, kept off every network but loopback. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

const results = [];

/** Runs one named check, recording and printing whether it held. */
export async function check(name, f) {
  try {
    await f();
    results.push([name, true]);
    console.log(`ok - ${name}`);
  } catch (e) {
    results.push([name, false]);
    console.log(`not ok - ${name}\n  ${e.stack ?? e}`);
  }
}

/** Prints the closing line and exits with the checks' verdict. */
export function finish() {
  const failed = results.filter(([, ok]) => !ok).length;
  console.log(`e2e: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
