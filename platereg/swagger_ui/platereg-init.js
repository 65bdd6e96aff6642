// Ours, not Swagger UI's: starts Swagger UI in the page's #swagger-ui element on the
// OpenAPI document named by its data-openapi-url attribute. A file, not an inline script,
// so that the page's Content-Security-Policy allows scripts from this origin only.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null
  });
});
