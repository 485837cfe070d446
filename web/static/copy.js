// Progressive enhancement: a Copy button next to the token. The page works
// without it (the token is in a read-only field).
document.querySelectorAll("button[data-copy]").forEach(function (b) {
  var field = document.getElementById(b.dataset.copy);
  if (!field || !navigator.clipboard) return;
  b.hidden = false;
  b.addEventListener("click", function () {
    navigator.clipboard.writeText(field.value).then(function () {
      b.textContent = "Copied";
    });
  });
});
