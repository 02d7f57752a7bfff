/*
 * The ladder diagram of a traced dialog: an arrow links to its message (#msg-<id>), a
 * <details> further down. Opening that <details> and marking the arrow is all this does;
 * without it, the link still scrolls to the message.
 */
(function () {
  "use strict";

  function show() {
    var id = location.hash.slice(1);
    var message = id && document.getElementById(id);
    if (!message || message.tagName !== "DETAILS") return;
    message.open = true;
    document.querySelectorAll("#ladder .arrow.selected").forEach(function (arrow) {
      arrow.classList.remove("selected");
    });
    var arrow = document.querySelector('#ladder .arrow[href="#' + id + '"]');
    if (arrow) arrow.classList.add("selected");
    message.scrollIntoView({ block: "nearest" });
  }

  window.addEventListener("hashchange", show);
  show();
})();
