// Drives the policy explorer in real headless Chromium (Debian's, through
// playwright-core): reads two matrix cells, opens one with the keyboard,
// tries a request, saves a screenshot, then rewrites the policy file and
// waits for the page to follow. Prints one JSON line of what it saw; exits
// non-zero on any failure. Run by tests/tests/explorer_browser.rs.
//
// Between the two, it compares a candidate policy on /compare.
//
//   node explorer.mjs <page url> <output dir> <policy file> <replacement policy file> <candidate policy file>
import { chromium } from "playwright-core";
import { copyFileSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

const [url, outDir, policyPath, replacementPath, candidatePath] = process.argv.slice(2);
if (!url || !outDir || !policyPath || !replacementPath || !candidatePath) {
  console.error("usage: explorer.mjs <url> <output dir> <policy file> <replacement policy file> <candidate policy file>");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const seen = {};
try {
  // bypassCSP only so the test can inject axe-core; the page itself runs
  // under its own strict Content-Security-Policy.
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, bypassCSP: true });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const problems = [];
  page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
  page.on("pageerror", (e) => problems.push(String(e)));

  await page.goto(url);
  const cell = (p, c) => page.locator(`td[data-purpose="${p}"][data-category="${c}"]`);
  seen.advertisingCustomerData = (await cell("advertising", "customer-data").innerText()).trim();
  seen.lboDiagnosticData = (await cell("lbo", "diagnostic-data").innerText()).trim();
  seen.lboDiagnosticTitle = await cell("lbo", "diagnostic-data").locator("a").getAttribute("title");
  seen.name = (await page.locator("#policy-name").innerText()).trim();
  seen.revision = (await page.locator("#policy-revision").innerText()).trim();
  await page.screenshot({ path: join(outDir, "explorer.png"), fullPage: false });

  // Accessibility: axe-core's WCAG 2.1 A/AA rules over the whole page.
  await page.addScriptTag({ path: axePath });
  seen.accessibility = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });

  // Keyboard: focus the conditional cell's link, press Enter, and its
  // explanation shows.
  await cell("lbo", "diagnostic-data").locator("a").focus();
  await page.keyboard.press("Enter");
  const explanation = page.locator("section.explanation:target");
  await explanation.waitFor({ state: "visible" });
  seen.explanation = (await explanation.innerText()).trim();
  await explanation.screenshot({ path: join(outDir, "explorer-cell.png") });

  // Try a request with the form.
  await page.selectOption("#purpose", "lbo");
  await page.selectOption("#category", "diagnostic-data");
  await page.selectOption("#deidentification", "anonymized");
  await page.fill("#subject", "analytics");
  await page.locator("#try-form button[type=submit]").press("Enter");
  const result = page.locator("#result");
  await result.waitFor({ state: "visible" });
  seen.tried = {
    decision: await result.getAttribute("data-decision"),
    rules: (await page.locator("#result-rules").innerText()).trim(),
    reason: (await page.locator("#result-reason").innerText()).trim(),
  };
  await result.screenshot({ path: join(outDir, "explorer-result.png") });

  // The reverse question: the purpose left at "any".
  await page.selectOption("#purpose", "");
  await page.selectOption("#category", "customer-data");
  await page.selectOption("#deidentification", "");
  await page.fill("#subject", "crm");
  await page.locator("#try-form button[type=submit]").press("Enter");
  const permitted = page.locator('#result[data-decision="PERMITTED_PURPOSES"]');
  await permitted.waitFor({ state: "visible" });
  seen.permitted = await page
    .locator("#result-purposes tbody tr")
    .evaluateAll((rows) => rows.map((r) => r.dataset.purpose));

  // A candidate compared on /compare, reached from the page's navigation:
  // changed cells marked, the verdict, the examples; nothing served.
  await page.locator('nav a[href="/compare"]').click();
  await page.fill("#policy", readFileSync(candidatePath, "utf8"));
  await page.locator("form[action='/compare'] button[type=submit]").click();
  const compared = page.locator("#result[data-result]");
  await compared.waitFor({ state: "visible" });
  seen.compare = {
    result: await compared.getAttribute("data-result"),
    widened: await page.locator("td.widened").evaluateAll((tds) => tds.map((td) => `${td.dataset.purpose} x ${td.dataset.category}`)),
    widenedText: (await page.locator("td.widened").first().innerText()).trim(),
    verdict: (await page.locator(".verdict").innerText()).trim(),
    examples: (await page.locator("#changes").innerText()).trim(),
  };
  await page.addScriptTag({ path: axePath });
  seen.compareAccessibility = await page.evaluate(async () => {
    const result = await window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  await page.screenshot({ path: join(outDir, "explorer-compare.png"), fullPage: false });
  await page.goto(url);

  // The policy changes on disk: the page follows without a manual reload.
  copyFileSync(replacementPath, policyPath + ".new");
  renameSync(policyPath + ".new", policyPath);
  await page.waitForFunction(
    (old) => document.querySelector("#policy-revision")?.textContent.trim() !== old,
    seen.revision,
    { timeout: 15_000 },
  );
  seen.revisionAfter = (await page.locator("#policy-revision").innerText()).trim();
  seen.advertisingCustomerDataAfter = (await cell("advertising", "customer-data").innerText()).trim();
  seen.problems = problems;
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
