// Starts Swagger UI on /docs. It is a file of its own, not an inline script, so
// that the page's Content-Security-Policy can allow scripts from 'self' only.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    // The bearer token given to Authorize survives a reload (in localStorage).
    persistAuthorization: true,
    // No badge from validator.swagger.io: the page asks no other host for anything.
    validatorUrl: null,
  });
})();
