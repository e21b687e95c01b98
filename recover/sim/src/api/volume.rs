//! Cinder: volumes.

use super::*;

pub(super) async fn show_volume(
    State(sh): S,
    Path((project, id)): Path<(String, String)>,
) -> Response {
    if project != PROJECT_ID {
        return not_found(&format!("Project {project}"));
    }
    let st = sh.state.lock().unwrap();
    match st.volumes.get(&id) {
        Some(v) => Json(json!({ "volume": st.render_volume(v) })).into_response(),
        None => not_found(&format!("Volume {id}")),
    }
}
