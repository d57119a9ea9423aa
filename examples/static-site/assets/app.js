// Client-side routing: every unknown path is served index.html, so this
// script sees the path the visitor asked for.
document.getElementById("route").textContent = "You are at " + location.pathname;
