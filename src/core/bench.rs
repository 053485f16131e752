//! Load generators and measurements behind `phoenix bench` (written by a helper).
