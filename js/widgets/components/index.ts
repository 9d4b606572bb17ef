// The rendering components, free of anywidget: each takes an element, a DataStore and
// callbacks. The notebook widgets (../widget.ts) and the JupyterLab panel share them.

export { ApiError, ChannelApi, RestApi } from "./api";
export type { LogOptions, LogRead, ScriptHutApi } from "./api";
export { createCostView } from "./costview";
export { DagGroups, aggregateState, buildUnits } from "./dag";
export { createJobTable } from "./jobtable";
export type { JobFilters, JobTableOptions } from "./jobtable";
export { createRunView } from "./runview";
export { DataStore, frameThrottle } from "./store";
export type { PatchMessage, Row, SnapshotMessage, StoreChange } from "./store";
export { createTimeline, packLanes } from "./timeline";
export { VirtualTable } from "./vtable";
