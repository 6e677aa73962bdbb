// The form posts to /login with the same ?next= the server redirected here with.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const next = params.get("next") || "/calls";
  document.getElementById("login").setAttribute("action", "/login?next=" + encodeURIComponent(next));
  document.getElementById("failed").hidden = params.get("failed") !== "1";
})();
