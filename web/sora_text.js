// Shows the text a Sora node reports (its {"ui": {"text": [...]}}) inside the node: the caption
// written by Sora Recaption, the grid sizes of Sora Patchify Grid. The stock frontend only does
// this for its own "Preview as Text" node, so we reuse the text preview widget it exposes.
import { app } from "../../scripts/app.js";

const NODES_WITH_TEXT = new Set(["SoraRecaption", "SoraPatchifyGrid"]);

app.registerExtension({
  name: "sora-nodes.ShowText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const preview = window.comfyAPI?.textPreviewWidgets;
    if (!NODES_WITH_TEXT.has(nodeData.name) || !preview?.addTextPreviewWidgets) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, arguments);
      preview.addTextPreviewWidgets(this);
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      preview.updateTextPreviewWidgets(this, message);
    };
  },
});
