"""`worldplay traj edit`: a Textual editor for camera trajectories.

`document` and `state` are plain Python (no Textual) so the editing rules are testable and benchmarkable
on their own; `app` builds the Textual application from injected parts (state, reference image, submit
function), `widgets` and `screens` hold its pieces and `editor.tcss` its look.
"""
