// tilekeeper: no basemap. The original draws OpenStreetMap tiles from the internet, which a
// deployment without internet cannot reach; footprints and previews are drawn without one.
export default function configureBasemap() {
  return [];
}
