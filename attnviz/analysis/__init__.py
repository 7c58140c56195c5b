"""What a trained network does with a picture: probes of the attention modules' readouts, explanations
(CAMs and attributions), their faithfulness, class-wise excitation profiles, sanity checks, interventions,
and the one inspect call that brings them together for the app and the CLI."""
