// The shape every file in dashboards/ must have, built from Grafana's own published types
// (@grafana/schema, pinned in package.json). dashboard_schema_test.py writes each dashboard's JSON
// into generated/<name>.ts as an object literal typed `VmitapDashboard` (so literal types and
// excess-property checks apply) and assigns it to Grafana's `Dashboard` as well.
import type { Dashboard, DataQuery, FieldConfigSource, Panel, RowPanel } from '@grafana/schema';
import type * as bargauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as gauge from '@grafana/schema/dist/esm/raw/composable/gauge/panelcfg/x/GaugePanelCfg_types.gen';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

// A JSON file holds a string enum's value, never the enum: `ThresholdsMode.Absolute` is
// "absolute" on disk. Json<T> turns every string enum in T into the union of its values and leaves
// everything else as Grafana declares it (numeric enums already accept their numbers).
export type Json<T> = T extends string
  ? `${T}`
  : T extends readonly (infer E)[]
    ? Json<E>[]
    : T extends object
      ? { [K in keyof T]: Json<T[K]> }
      : T;

// Stored panel options and custom field config are partial: Grafana fills in its defaults on load.
// Every key present must still exist in the panel's published options type, with its type.
type DeepPartial<T> = T extends readonly (infer E)[]
  ? DeepPartial<E>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

// vmitap ships no data source: panels, queries and query variables all name the dashboard's
// `datasource` variable (type "datasource", query "prometheus").
export interface DatasourceVariable {
  type: 'prometheus';
  uid: '${datasource}';
}

// A Prometheus query as Grafana stores it (@grafana/schema publishes no Prometheus query type):
// the common DataQuery plus the fields our dashboards use. prometheus_test.py runs every `expr`.
export type PromQuery = Omit<Json<DataQuery>, 'datasource'> & {
  datasource: DatasourceVariable;
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  interval?: string;
  format?: 'time_series' | 'table' | 'heatmap';
};

type PanelOf<Kind extends string, Options, Custom> = Omit<Json<Panel>, 'type' | 'options' | 'fieldConfig' | 'targets'> & {
  type: Kind;
  datasource: DatasourceVariable;
  options?: DeepPartial<Json<Options>>;
  fieldConfig?: Json<FieldConfigSource<DeepPartial<Custom>>>;
  targets?: PromQuery[];
};

export type VmitapPanel =
  | PanelOf<'timeseries', timeseries.Options, timeseries.FieldConfig>
  | PanelOf<'stat', stat.Options, Record<string, never>>
  | PanelOf<'gauge', gauge.Options, Record<string, never>>
  | PanelOf<'bargauge', bargauge.Options, Record<string, never>>
  | PanelOf<'table', table.Options, table.FieldConfig>;

export type VmitapRow = Omit<Json<RowPanel>, 'panels'> & { panels: VmitapPanel[] };

export type VmitapDashboard = Omit<Json<Dashboard>, 'panels'> & {
  panels: (VmitapPanel | VmitapRow)[];
};

// The narrowed types above may only add constraints, never remove Grafana's: each must still be
// assignable to the published type (the generated files also assign every dashboard to it).
type Assignable<A extends B, B> = A;
export type _PanelIsGrafanaPanel = Assignable<VmitapPanel, Json<Panel>>;
export type _RowIsGrafanaRow = Assignable<VmitapRow, Json<RowPanel>>;
export type _DashboardIsGrafanaDashboard = Assignable<VmitapDashboard, Json<Dashboard>>;
