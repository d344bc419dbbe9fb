// The API reference page at /docs: Swagger UI (from the npm package, bundled at `make install`)
// rendering the service's own OpenAPI document. Nothing is fetched from elsewhere.
import SwaggerUIBundle from "swagger-ui-dist/swagger-ui-bundle.js";

const root = document.getElementById("api-reference");
SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  domNode: root,
  deepLinking: true,
  // "Try it out" sends requests from this page to this service (connect-src 'self').
  tryItOutEnabled: false,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
