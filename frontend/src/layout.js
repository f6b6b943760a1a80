// The run viewer's graph layout: dagre's layered layout (nodes placed by level,
// loop bodies as clusters), nothing else.
export {graphlib, layout} from "@dagrejs/dagre";
