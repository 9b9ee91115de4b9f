// Sortable, filterable cells table. Blank cells sort last in both directions.
(() => {
  const table = document.getElementById("cells-table");
  if (!table) return;
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  const value = (row, index) => {
    const cell = row.cells[index];
    return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  };
  headers.forEach((th, index) => {
    const button = th.querySelector("button");
    if (!button) return;
    button.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = th.dataset.type === "number";
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = value(a, index);
        const y = value(b, index);
        if (x === "" || y === "") return (x === "") - (y === "");
        const order = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, { numeric: true });
        return ascending ? order : -order;
      });
      body.append(...rows);
    });
  });
  const filter = document.getElementById("cell-filter");
  const shown = document.getElementById("cells-shown");
  const statuses = Array.from(document.querySelectorAll("input[data-status]"));
  const apply = () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const wanted = new Set(statuses.filter((box) => box.checked).map((box) => box.dataset.status));
    let count = 0;
    for (const row of body.rows) {
      const text = row.textContent.toLowerCase();
      const visible = wanted.has(row.dataset.status) && words.every((word) => text.includes(word));
      row.hidden = !visible;
      count += visible ? 1 : 0;
    }
    shown.textContent = String(count);
  };
  filter.addEventListener("input", apply);
  statuses.forEach((box) => box.addEventListener("change", apply));
})();
